"""Scanning an image folder: its layout, classes, files, automatic split and fingerprint.

TF-free, so a folder can be checked (and its split computed) without TensorFlow. See
imgcls/data/sources/folder.py for how the scanned files become a TFDS dataset.
"""

import hashlib
import os
import re

from absl import logging

from imgcls.data.images import has_image_extension, printable_path

# Bump when the prepared data changes for the same files and settings (encoding, features, ...).
# 2: PNGs with a bad chunk checksum are re-encoded (TensorFlow cannot decode them as they are).
# 3: images stored in their own colour mode (one preparation serves every config.dataset.channels),
#    examples stored class-interleaved (stratified_order), pixel statistics in the metadata.
FORMAT_VERSION = 3
AUTO_SPLITS = ("train", "validation", "test")  # of root/<class>/*, in split_fractions order
FINGERPRINT_CHARS = 12  # of the fingerprint in the builder config name
MAX_NAME_CHARS = 40  # of the sanitized folder name in the builder config name
LAYOUT_HELP = (
    "Expected root/<class>/<images> (split automatically into train/validation/test by "
    "--config.dataset.split_fractions) or root/<split>/<class>/<images> (e.g. train/, "
    "validation/, test/), with at least 2 class folders."
)
MAX_EMPTY_LISTED = 10  # empty class folders named in the warning or error
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class Scan:
    """The files of an image folder: layout, class names and (path, label, size, mtime) per split.

    `files` maps each split to a list of (relative path with '/', label, size, mtime_ns), in the
    sorted walk order.
    """

    def __init__(self, root, layout, class_names, files, split_fractions=None, labels=None):
        self.root = root
        # 'split' (root/<split>/<class>), 'class' (root/<class>) or 'labels' (a labels file)
        self.layout = layout
        self.class_names = tuple(class_names)
        self.files = files
        self.split_fractions = split_fractions  # for layouts 'class' and 'labels'
        # layout 'labels': the labels file and what was read from it (folder_labels.scan_labels)
        self.labels = labels

    @property
    def num_files(self):
        return sum(len(entries) for entries in self.files.values())


def check_split_fractions(fractions):
    """The 3 train/validation/test fractions as floats; ValueError unless valid."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or any(not f >= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            f"config.dataset.split_fractions={fractions!r} must be 3 non-negative "
            "numbers (train, validation, test) that sum to 1, e.g. "
            "--config.dataset.split_fractions='(0.8, 0.1, 0.1)'."
        )
    return values


def assign_split(relative_path, split_fractions):
    """The split of a file of root/<class>/*: a pure function of its path relative to root.

    sha1(path) gives a uniform number in [0, 1) that falls into one of the consecutive
    intervals of the train/validation/test fractions; so a file's split never depends on the
    other files, and a zero fraction never receives a file.
    """
    u = int.from_bytes(_path_hash(relative_path)[:8], "big") / 2.0**64
    cumulative = 0.0
    for name, fraction in zip(AUTO_SPLITS, split_fractions, strict=True):
        cumulative += fraction
        if u < cumulative:
            return name
    # Rounding (fractions summing to 1 - 1e-7): the last split that receives files.
    return [n for n, f in zip(AUTO_SPLITS, split_fractions, strict=True) if f > 0][-1]


def _entries(directory):
    """The non-hidden entries of a directory, sorted by name."""
    try:
        with os.scandir(directory) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise ValueError(
            f"Cannot list the image folder {directory} (--config.dataset.path): {e}"
        ) from e


def _is_dir(entry):
    try:
        return entry.is_dir()  # follows symbolic links
    except OSError:
        return False


def _is_file(entry):
    try:
        return entry.is_file()
    except OSError:
        return False


def _walk(directory, relative, ancestors=()):
    """(relative path, size, mtime_ns) of every non-hidden file below directory, sorted.

    Recursive; a symbolic link back to a folder being walked is not followed again.
    """
    here = os.stat(directory)
    ancestors = (*ancestors, (here.st_dev, here.st_ino))
    for entry in _entries(directory):
        path = f"{relative}/{entry.name}"
        if _is_dir(entry):
            stat = entry.stat()
            if (stat.st_dev, stat.st_ino) not in ancestors:
                yield from _walk(entry.path, path, ancestors)
        elif _is_file(entry):
            stat = entry.stat()
            yield path, stat.st_size, stat.st_mtime_ns


def _layout_error(root, problem):
    return ValueError(f"Image folder {root} (--config.dataset.path) {problem}. {LAYOUT_HELP}")


def _class_folders(folder, relative):
    """[(class name, its files)] of the class folders in `folder`, and the paths of the empty ones
    (relative to the root)."""
    classes, empty = [], []
    for entry in _entries(folder):
        if _is_dir(entry):
            prefix = f"{relative}/{entry.name}" if relative else entry.name
            found = list(_walk(entry.path, prefix))
            if found:
                classes.append((printable_path(entry.name), found))
            else:
                empty.append(printable_path(prefix))
    return classes, empty


def _report_empty(root, empty, strict):
    """A class folder without files is no class: a warning, or with strict an error."""
    if not empty:
        return
    shown = ", ".join(f"{p}/" for p in empty[:MAX_EMPTY_LISTED])
    more = f" and {len(empty) - MAX_EMPTY_LISTED} more" if len(empty) > MAX_EMPTY_LISTED else ""
    if strict:
        raise ValueError(
            f"Image folder {root} has {len(empty)} empty class folder(s): {shown}{more}, and "
            "config.dataset.strict=True. Add images to them or remove them, or set "
            "--config.dataset.strict=False to leave them out."
        )
    logging.warning(
        "Image folder %s: left out %d empty class folder(s) (no files in them): %s%s. Add "
        "images or remove them; --config.dataset.strict=True makes this an error.",
        root,
        len(empty),
        shown,
        more,
    )


def _detect_layout(folders):
    """'class' if a folder of the root holds an image file, else 'split' if one holds folders.

    Stops at the first image file, so a root/<class>/* folder is not listed in full here.
    """
    holds_folders = False
    for folder in folders:
        try:
            with os.scandir(folder.path) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    if _is_file(entry) and has_image_extension(entry.name):
                        return "class"
                    holds_folders = holds_folders or _is_dir(entry)
        except OSError as e:
            raise ValueError(f"Cannot list the image folder {folder.path}: {e}") from e
    return "split" if holds_folders else "class"


def scan_folder(path, split_fractions=(0.8, 0.1, 0.1), strict=False):
    """Detects the layout of the folder at `path` and lists its files; a Scan.

    It is root/<split>/<class>/* when no folder of the root holds images itself and some hold
    folders; otherwise root/<class>/*, whose files are split by split_fractions (assign_split).
    A class folder without files is left out with a warning (an error when `strict`).
    """
    if not path:
        raise ValueError(
            "config.dataset.path is empty: set it to the folder of images to train on, e.g. "
            f"--config.dataset.path=/data/pets. {LAYOUT_HELP}"
        )
    root = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(root):
        raise _layout_error(root, "does not exist")
    if not os.path.isdir(root):
        raise _layout_error(root, "is not a folder")
    top = _entries(root)
    images = [e.name for e in top if _is_file(e) and has_image_extension(e.name)]
    if images:
        raise _layout_error(
            root,
            f"has images directly in it ({', '.join(images[:3])}, ...); move them into one "
            "sub-folder per class, or add a labels file (a CSV naming each image's label; "
            "--config.dataset.labels)",
        )
    folders = [e for e in top if _is_dir(e)]
    if not folders:
        raise _layout_error(root, "is empty" if not top else "has no sub-folders")
    layout = _detect_layout(folders)

    files, empty = {}, []
    if layout == "split":
        fractions = None
        for folder in folders:
            split = folder.name
            classes, empty_here = _class_folders(folder.path, split)
            empty += empty_here
            if not classes:
                logging.warning(
                    "Ignoring %s: it has no class folders with files.", os.path.join(root, split)
                )
                continue
            if not _SPLIT_NAME.match(split) or split.lower() == "all":
                raise _layout_error(
                    root,
                    f"has the split folder '{printable_path(split)}'; split names must be "
                    "letters, digits and '_' (and not 'all'): rename it",
                )
            files[split] = classes
    else:
        fractions = check_split_fractions(split_fractions)
        files[None], empty = _class_folders(root, "")
    _report_empty(root, empty, strict)
    class_names = sorted({name for classes in files.values() for name, _ in classes})
    if len(class_names) < 2:
        found = f"only the class {class_names}" if class_names else "no class folder with files"
        raise _layout_error(
            root, f"has {found} (layout root/{'<split>/' * (layout == 'split')}<class>)"
        )
    label = {name: i for i, name in enumerate(class_names)}
    split_files = _split_files(root, layout, files, label, fractions)
    return Scan(root, layout, class_names, split_files, fractions)


def _split_files(root, layout, files, label, fractions):
    """{split: [(path, label, size, mtime)]}: the split folders' files, or root/<class>/*'s
    files assigned to splits by their path (assign_split)."""
    if layout == "split":
        return {
            split: [
                (p, label[name], size, mtime) for name, found in classes for p, size, mtime in found
            ]
            for split, classes in files.items()
        }
    split_files = {s: [] for s, f in zip(AUTO_SPLITS, fractions, strict=True) if f > 0}
    for name, found in files[None]:
        for p, size, mtime in found:
            split_files[assign_split(p, fractions)].append((p, label[name], size, mtime))
    for split, entries in split_files.items():
        if not entries:
            raise _layout_error(
                root,
                f"has too few files to give the '{split}' split any (split_fractions="
                f"{fractions}); add images, or set its fraction to 0 with "
                "--config.dataset.split_fractions",
            )
    return split_files


def _path_hash(relative_path):
    return hashlib.sha1(relative_path.encode("utf-8", "surrogateescape")).digest()


def stratified_order(entries):
    """The entries (path, label, ...) of a split in the order they are stored: classes interleaved.

    Within a class the order is a hash of the path (a fixed pseudo-random order); the classes are
    merged by each entry's position (rank + 0.5) / class size. So every run of consecutive
    entries, in particular the tail that validation_fraction carves off, holds each class in
    proportion to its size, to within one example.
    """
    by_class = {}
    for entry in entries:
        by_class.setdefault(entry[1], []).append(entry)
    keyed = []
    for label, group in by_class.items():
        group.sort(key=lambda e: _path_hash(e[0]))
        keyed += [((rank + 0.5) / len(group), label, e) for rank, e in enumerate(group)]
    keyed.sort(key=lambda k: k[:2])
    return [entry for _, _, entry in keyed]


def fingerprint(scan):
    """sha1 hex of everything that determines the prepared data: files and settings."""
    h = hashlib.sha1()
    settings = (FORMAT_VERSION, scan.layout, scan.split_fractions, scan.class_names)
    if scan.labels:  # the labels file's content and the columns read from it
        settings += tuple(scan.labels[k] for k in ("digest", "image_column", "label_column"))
    h.update(repr(settings).encode("utf-8"))
    for split in sorted(scan.files):
        h.update(f"\0split {split}\n".encode())
        for path, label, size, mtime in scan.files[split]:
            h.update(f"{path}\0{label}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def config_name(scan, digest):
    """'<sanitized folder name>_<fingerprint prefix>': a valid TFDS builder config name."""
    base = re.sub(r"[^a-z0-9]+", "_", os.path.basename(scan.root).lower()).strip("_")
    return f"{base[:MAX_NAME_CHARS] or 'folder'}_{digest[:FINGERPRINT_CHARS]}"
