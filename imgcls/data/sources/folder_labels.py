"""Image folders labelled by a file: a CSV or TSV that maps image files under the root to labels.

Competition and public image sets often come as a flat folder of images plus a labels file
(`P/train/<id>.jpg` + `P/labels.csv` with `id,breed`; `P/images/*.png` + `P/train.csv` with
`filename,label`), often with an unlabelled `P/test/` folder beside. config.dataset.labels picks
the file: 'auto' takes the one *.csv / *.tsv at the top of the root whose columns name image files
under it (templates such as sample_submission.csv are not candidates; class folders are used
when there is none), '' never uses one, a path uses that file. Its columns are found by content:

- the image column: the column whose values name image files under the root, relative to it or
  to one of its folders (the base folder that matches most values), with or without extension;
- the label column: the other column with at least 2 and at most half as many distinct values
  as rows (a column named like 'label', 'class', 'target', ... first; then a non-numeric one);
- a split column: named split / subset / set / partition, or whose every value is a split name
  (train, val, test, ...): its values are the splits. Without one, the files are split by
  config.dataset.split_fractions, as root/<class>/* is (folder_scan.assign_split).

config.dataset.image_column / label_column name them explicitly (a header name, or a 1-based
column number for a file without a header row). Rows that cannot be used (an image that is not
there, an empty label, one image given two labels) and images in the labelled folders without a
row are counted and the first few named in one warning, or an error with config.dataset.strict.
The result is a folder_scan.Scan with layout 'labels', prepared like any image folder. TF-free.
"""

import collections
import csv
import hashlib
import os

from absl import logging

from imgcls.data.images import has_image_extension, printable_path
from imgcls.data.sources import folder_scan
from imgcls.data.splits import SPLIT_NAMES
from imgcls.values import is_auto

LABELS_EXTENSIONS = (".csv", ".tsv")
TEMPLATE_WORDS = ("submission",)  # sample_submission.csv & co: prediction templates, not labels
LABEL_COLUMN_NAMES = frozenset(
    "label labels class classes class_name classname category categories target targets y "
    "species breed type name diagnosis".split()
)
SPLIT_COLUMN_NAMES = frozenset("split subset set partition".split())
FOLD_COLUMN_NAMES = frozenset("fold folds kfold k_fold cv_fold".split())  # never labels
ALL_SPLIT_NAMES = frozenset(n for names in SPLIT_NAMES.values() for n in names)
MIN_IMAGE_MATCH = 0.5  # of a column's values that must name image files
SAMPLED_VALUES = 200  # values per column tried against every base folder
MAX_LISTED = 5  # rows or files named per problem in the warning


class NamesNoImage(ValueError):
    """No column of a table names image files under the root: not a labels file of it."""


class Table:
    """A labels file read whole: `columns` (header names, or '1', '2', ... without a header)
    and `rows` (lists of stripped strings, padded to the header's width)."""

    def __init__(self, path, columns, rows, header):
        self.path, self.columns, self.rows, self.header = path, columns, rows, header

    def column(self, name):
        i = self.columns.index(name)
        return [row[i] for row in self.rows]


def read_table(path):
    """The Table of a CSV (or, by extension or content, TSV) file; ValueError naming the file
    when it cannot be read."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"Cannot read the labels file {path}: {e}") from e
    first = text.split("\n", 1)[0]
    tab = path.lower().endswith(".tsv") or first.count("\t") > first.count(",")
    rows = [
        [cell.strip() for cell in row]
        for row in csv.reader(text.splitlines(), delimiter="\t" if tab else ",")
    ]
    rows = [row for row in rows if any(row)]
    if len(rows) < 2:
        raise ValueError(
            f"The labels file {path} has {len(rows)} non-empty line(s): nothing to use."
        )
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    header = rows[0]
    if len(set(header)) != width or not all(header):  # not a header row: name by position
        return Table(path, [str(i + 1) for i in range(width)], rows, header=False)
    return Table(path, header, rows[1:], header=True)


def _normalized(value):
    return value.strip().replace("\\", "/").removeprefix("./").strip("/")


class ImageIndex:
    """The image files under a root: relative paths ('/'-separated), the same without their
    extension (unique ones only), and the folders that hold them."""

    def __init__(self, root):
        self.root = root
        self.files = {}
        stems = collections.defaultdict(list)
        self.folder_counts = collections.Counter()
        for path, size, mtime in folder_scan._walk(root, ""):
            path = path.lstrip("/")
            if not has_image_extension(path):
                continue
            self.files[path] = (size, mtime)
            stems[os.path.splitext(path)[0]].append(path)
            self.folder_counts[os.path.dirname(path)] += 1
        self.stems = {stem: paths[0] for stem, paths in stems.items() if len(paths) == 1}

    def find(self, base, value):
        """The image file `value` names under the folder `base` ('' = the root), or None."""
        key = f"{base}/{value}" if base else value
        if key in self.files:
            return key
        return self.stems.get(key)

    def bases(self):
        """The folders a column's values may be relative to: the root and every folder above
        an image (most images first)."""
        found = {""}
        for folder, _ in self.folder_counts.most_common():
            while folder and folder not in found:
                found.add(folder)
                folder = os.path.dirname(folder)
        return sorted(found, key=lambda f: (f.count("/"), f))


def _best_base(index, values):
    """(base folder, matches) that names the most image files among `values`."""
    sample = [_normalized(v) for v in values[:SAMPLED_VALUES] if v.strip()]
    best, best_count = "", -1
    for base in index.bases():
        count = sum(index.find(base, v) is not None for v in sample)
        if count > best_count:
            best, best_count = base, count
    return best, best_count / max(1, len(sample))


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split_column(table, exclude):
    """The column whose values are the splits, or None."""
    for name in table.columns:
        if name in exclude:
            continue
        values = {v.lower() for v in table.column(name) if v}
        if not values or len(values) > 8:
            continue
        named = name.lower() in SPLIT_COLUMN_NAMES and not all(map(_is_number, values))
        if named or values <= ALL_SPLIT_NAMES:
            if all(folder_scan._SPLIT_NAME.match(v) and v != "all" for v in values):
                return name
    return None


def _label_candidates(table, exclude):
    """[(column, distinct values)] of the columns that may hold the labels."""
    found = []
    for name in table.columns:
        if name in exclude or name.lower() in FOLD_COLUMN_NAMES | SPLIT_COLUMN_NAMES:
            continue
        values = [v for v in table.column(name) if v]
        distinct = len(set(values))
        if len(values) >= len(table.rows) / 2 and 2 <= distinct <= max(2, len(table.rows) // 2):
            found.append((name, distinct))
    return found


def _choose_label_column(table, candidates):
    if len(candidates) == 1:
        return candidates[0][0]
    named = [c for c, _ in candidates if c.lower() in LABEL_COLUMN_NAMES]
    if len(named) == 1:
        return named[0]
    words = [c for c, _ in candidates if not all(_is_number(v) for v in table.column(c) if v)]
    if len(words) == 1:
        return words[0]
    return None


def _named_column(table, name, key):
    """The column an explicit config.dataset.<key> names (a header name or a column number)."""
    if name in table.columns:
        return name
    if name.isdigit() and 1 <= int(name) <= len(table.columns):
        return table.columns[int(name) - 1]
    raise ValueError(
        f"--config.dataset.{key}={name}: the labels file {table.path} has no such column; its "
        f"columns: {', '.join(table.columns)} (or give a column number from 1)."
    )


class Choice:
    """What a labels file gives: its columns, the base folder of the image paths, the rows."""

    def __init__(self, table, image_column, label_column, split_column, base, score):
        self.table = table
        self.image_column, self.label_column = image_column, label_column
        self.split_column, self.base, self.score = split_column, base, score


def choose_columns(table, index, image_column="auto", label_column="auto"):
    """The Choice of `table`'s columns (explicit names win); ValueError saying what was found
    and the flags to choose when a column cannot be found."""
    scores = {}
    for name in table.columns:
        scores[name] = _best_base(index, table.column(name))
    if not is_auto(image_column) and image_column:
        image = _named_column(table, image_column, "image_column")
    else:
        image = max(table.columns, key=lambda c: scores[c][1])
        if scores[image][1] < MIN_IMAGE_MATCH:
            shown = ", ".join(f"{c} ({scores[c][1]:.0%})" for c in table.columns)
            raise NamesNoImage(
                f"No column of the labels file {table.path} names image files under "
                f"{index.root} (share of values that do, in a sample: {shown}). Name it with "
                "--config.dataset.image_column=NAME."
            )
    base, score = scores[image]
    if table.header and index.find(base, _normalized(image)):  # the first row names an image
        headerless = Table(table.path, [str(i + 1) for i in range(len(table.columns))], [], False)
        headerless.rows = [table.columns, *table.rows]
        number = str(table.columns.index(image) + 1)
        label = label_column
        if not is_auto(label_column) and label_column in table.columns:
            label = str(table.columns.index(label_column) + 1)
        return choose_columns(headerless, index, number, label)
    split = _split_column(table, {image})
    if not is_auto(label_column) and label_column:
        label = _named_column(table, label_column, "label_column")
    else:
        candidates = _label_candidates(table, {image, split})
        label = _choose_label_column(table, candidates)
        if label is None:
            found = ", ".join(f"{c} ({n} values)" for c, n in candidates) or "none"
            raise ValueError(
                f"Cannot tell which column of the labels file {table.path} holds the labels "
                f"(columns with 2 to {max(2, len(table.rows) // 2)} distinct values: {found}). "
                "Name it with --config.dataset.label_column=NAME."
            )
    if label == image:
        raise ValueError(
            f"The labels file {table.path}: the image and the label column are both '{label}': "
            "set --config.dataset.image_column and --config.dataset.label_column."
        )
    return Choice(table, image, label, split if split not in (image, label) else None, base, score)


def labels_files(root):
    """The candidate labels files at the top of `root` (templates excluded), sorted."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [
        os.path.join(root, n)
        for n in names
        if n.lower().endswith(LABELS_EXTENSIONS)
        and not n.startswith(".")
        and not any(w in n.lower() for w in TEMPLATE_WORDS)
        and os.path.isfile(os.path.join(root, n))
    ]


def labels_path(root, labels):
    """The labels file config.dataset.labels names: as given, else relative to the root."""
    path = os.path.expanduser(labels)
    if not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(root, path)
    if not os.path.isfile(path):
        raise ValueError(
            f"--config.dataset.labels={labels}: no such file (looked for it as given and in "
            f"{root}). Give the CSV/TSV that maps image files to labels, or '' for class folders."
        )
    return os.path.abspath(path)


def scan(ds):
    """The folder_scan.Scan of config.dataset `ds`: labelled by a file (layout 'labels') when
    ds.labels names one or 'auto' finds one, else the class folders (folder_scan.scan_folder)."""
    labels, image_column, label_column = ds.labels, ds.image_column, ds.label_column
    if not labels or not ds.path:
        return folder_scan.scan_folder(ds.path, ds.split_fractions, ds.strict)
    root = os.path.abspath(os.path.expanduser(os.fspath(ds.path)))
    if not is_auto(labels):
        index = ImageIndex(root)
        table = read_table(labels_path(root, labels))
        choice = choose_columns(table, index, image_column, label_column)
        return scan_labels(root, index, choice, ds.split_fractions, ds.strict)
    candidates = labels_files(root) if os.path.isdir(root) else []
    if not candidates:
        return folder_scan.scan_folder(ds.path, ds.split_fractions, ds.strict)
    index = ImageIndex(root)
    usable, refused = [], []
    for path in candidates:
        try:
            usable.append(choose_columns(read_table(path), index, image_column, label_column))
        except ValueError as e:
            refused.append((path, e))
    if len(usable) > 1:
        names = ", ".join(os.path.basename(c.table.path) for c in usable)
        raise ValueError(
            f"Image folder {root} has several labels files that name its images ({names}): "
            "choose one with --config.dataset.labels=FILE (or '' for class folders)."
        )
    explicit = not (is_auto(image_column) and is_auto(label_column))
    labelling = [(p, e) for p, e in refused if explicit or not isinstance(e, NamesNoImage)]
    if not usable and labelling:  # a labels file of this folder that cannot be read as one
        raise labelling[0][1]
    if usable:
        for path, e in refused:
            logging.info("Not a labels file of %s: %s (%s)", root, os.path.basename(path), e)
        return scan_labels(root, index, usable[0], ds.split_fractions, ds.strict)
    try:
        found = folder_scan.scan_folder(ds.path, ds.split_fractions, ds.strict)
    except ValueError as e:
        why = " ".join(f"{os.path.basename(p)}: {err}" for p, err in refused)
        raise ValueError(f"{e} Its labels file(s) could not be used either: {why}") from None
    names = ", ".join(os.path.basename(p) for p, _ in refused)
    logging.info("Image folder %s: %s labels no image; using the class folders.", root, names)
    return found


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def _sort_key(labels):
    if all(v.lstrip("-").isdigit() for v in labels):
        return lambda v: (int(v), v)
    return lambda v: v


def scan_labels(root, index, choice, split_fractions, strict=False):
    """The Scan of the rows of `choice` (layout 'labels'), after counting and naming the rows
    that cannot be used (a warning, or with `strict` an error)."""
    table = choice.table
    images, labels = table.column(choice.image_column), table.column(choice.label_column)
    splits = table.column(choice.split_column) if choice.split_column else [None] * len(images)
    first_row = 2 if table.header else 1  # the file's line number of rows[0]
    problems = collections.defaultdict(list)  # kind -> [what, ...]
    chosen = {}  # path -> (label, split, line)
    conflicting, listed = set(), set()  # images given two labels; images any row names
    for line, (value, label, split) in enumerate(
        zip(images, labels, splits, strict=True), first_row
    ):
        if not value:
            problems["rows without an image name"].append(f"line {line}")
            continue
        path = index.find(choice.base, _normalized(value))
        listed.add(path)
        if path is None:
            problems["rows whose image is not there"].append(printable_path(value))
        elif not label:
            problems["rows with an empty label"].append(f"line {line} ({printable_path(value)})")
        elif choice.split_column and not split:
            problems["rows with an empty split"].append(f"line {line}")
        elif path in chosen and chosen[path][0] != label:
            if path not in conflicting:
                problems["images given different labels"].append(
                    f"{printable_path(path)} ({chosen[path][0]} / {label})"
                )
            conflicting.add(path)
        else:
            chosen.setdefault(path, (label, split.lower() if split else None, line))
    for path in conflicting:
        del chosen[path]
    labelled_folders = {os.path.dirname(p) for p in chosen}
    unlisted = [
        printable_path(p)
        for p in index.files
        if os.path.dirname(p) in labelled_folders and p not in listed
    ]
    if unlisted:
        problems["images without a row"] = unlisted
    used = len(chosen)
    _report(table.path, problems, used, strict)
    found = {label for label, _, _ in chosen.values()}
    class_names = sorted(found, key=_sort_key(found))
    if len(class_names) < 2:
        raise ValueError(
            f"The labels file {table.path} gives {used} usable image(s) {len(class_names)} "
            f"class(es) in its column '{choice.label_column}': at least 2 are needed."
        )
    ids = {name: i for i, name in enumerate(class_names)}
    counts = collections.Counter(label for label, _, _ in chosen.values())
    single = sorted(name for name, n in counts.items() if n == 1)
    if single:
        logging.warning(
            "Labels file %s: %d class(es) have a single image (%s): they cannot be both trained "
            "and evaluated; add images or merge them.",
            table.path,
            len(single),
            ", ".join(single[:MAX_LISTED]) + (" ..." if len(single) > MAX_LISTED else ""),
        )
    files = collections.defaultdict(list)
    fractions = None
    if not choice.split_column:
        fractions = folder_scan.check_split_fractions(split_fractions)
    for path in sorted(chosen):
        label, split, _ = chosen[path]
        split = split or folder_scan.assign_split(path, fractions)
        files[split].append((path, ids[label], *index.files[path]))
    for split in [s for s, f in zip(folder_scan.AUTO_SPLITS, fractions or (), strict=False) if f]:
        if not files.get(split):
            raise ValueError(
                f"The labels file {table.path} gives too few images ({used}) for the '{split}' "
                f"split (split_fractions={fractions}); add rows, or set its fraction to 0 "
                "with --config.dataset.split_fractions."
            )
    described = {
        "file": table.path,
        "digest": _digest(table.path),
        "image_column": choice.image_column,
        "label_column": choice.label_column,
        "split_column": choice.split_column,
        "base": choice.base,
        "extension_added": sum(not has_image_extension(v) for v in images) > len(images) / 2,
        "classes": len(class_names),
        "rows": len(table.rows),
        "used": used,
        "left_out": {kind: len(found) for kind, found in problems.items()},
    }
    return folder_scan.Scan(root, "labels", class_names, dict(files), fractions, labels=described)


def _report(path, problems, used, strict):
    """One warning (or with `strict` one error) counting and naming the unusable rows."""
    if not problems:
        return
    parts = []
    for kind, found in problems.items():
        shown = ", ".join(found[:MAX_LISTED]) + (" ..." if len(found) > MAX_LISTED else "")
        parts.append(f"{len(found)} {kind} ({shown})")
    text = f"Labels file {path}: {'; '.join(parts)}"
    if strict:
        raise ValueError(
            f"{text}, and config.dataset.strict=True. Fix the file or the folder, or set "
            "--config.dataset.strict=False to leave them out."
        )
    logging.warning(
        "%s. Left out; training on the %d usable image(s) (--config.dataset.strict=True makes "
        "this an error).",
        text,
        used,
    )


def describe(labels, root):
    """The log's line of a labels choice (Scan.labels, as recorded), e.g. "labels: P/labels.csv,
    image = id (+ extension) under P/train, label = species (37 classes), 7,390 rows, ..."."""
    base = os.path.join(root, labels["base"]) if labels["base"] else root
    extension = " (+ extension)" if labels.get("extension_added") else ""
    split = f", split = {labels['split_column']}" if labels["split_column"] else ""
    return (
        f"labels: {labels['file']}, image = {labels['image_column']}{extension} under {base}, "
        f"label = {labels['label_column']} ({labels.get('classes', '?')} classes){split}, "
        f"{labels['rows']:,} rows, {labels['used']:,} images used"
    )
