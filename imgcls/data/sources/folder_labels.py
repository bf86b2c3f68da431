"""Image folders labelled by a file: a CSV or TSV that maps image files under the root to labels.

Competition and public image sets often come as a flat folder of images plus a labels file
(`P/train/<id>.jpg` + `P/labels.csv` with `id,breed`; `P/images/*.png` + `P/train.csv` with
`filename,label`), often with an unlabelled `P/test/` folder beside. config.dataset.labels picks
the file: 'auto' takes the one *.csv / *.tsv at the top of the root whose columns name image files
under it (templates such as sample_submission.csv are not candidates; class folders are used
when there is none), '' never uses one, a path uses that file. Its columns are found by content:

- the image column: the column whose values name image files under the root, relative to it or
  to one of its folders (the base folder that matches most values; others for images spread
  over sibling folders), with or without extension, in any case, or as a path ending in one;
- the label column: another column with at least 2 and at most half as many distinct values
  as rows (as many as rows for a label-like name: 'label', 'class', 'category_id', ...); of
  several, the one with a label-like name, else an error lists them. Beside valid class
  folders, a label column without such a name is an error too: the user chooses;
- a split column: one whose every value is a split name (train, val, test, ...), or fastai's
  true/false is_valid. Without one, the files are split by config.dataset.split_fractions, as
  root/<class>/* is (folder_scan.assign_split).

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
import re

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


class NotALabelsFile(ValueError):
    """No column of a table names image files under the root, or none can be a label: not a
    labels file of this folder (a list of test ids, metadata)."""


class Table:
    """A labels file read whole: `columns` (header names, or '1', '2', ... without a header)
    and `rows` (lists of stripped strings, padded to the header's width)."""

    def __init__(self, path, columns, rows, header):
        self.path, self.columns, self.rows, self.header = path, columns, rows, header

    def column(self, name):
        i = self.columns.index(name)
        return [row[i] for row in self.rows]


def read_table(path):
    """The Table of a CSV file (comma, semicolon, tab or '|' separated, found from its first
    line; UTF-8, else Windows-1252); ValueError naming the file when it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"Cannot read the labels file {path}: {e}") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
        logging.info("Labels file %s is not UTF-8: read as Windows-1252.", path)
    first = text.split("\n", 1)[0]
    delimiter = max(("\t", ",", ";", "|"), key=first.count)
    if path.lower().endswith(".tsv") or not first.count(delimiter):
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
    reader = csv.reader(text.splitlines(), delimiter=delimiter, skipinitialspace=True)
    rows = [[cell.strip() for cell in row] for row in reader]
    rows = [row for row in rows if any(row)]
    if len(rows) < 2:
        raise ValueError(
            f"The labels file {path} has {len(rows)} non-empty line(s): nothing to use."
        )
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    header = list(rows[0])
    if not header[0] and all(header[1:]):  # pandas' to_csv: an unnamed index column first
        header[0] = "index"
    if len(set(header)) != width or not all(header):  # not a header row: name by position
        return Table(path, [str(i + 1) for i in range(width)], rows, header=False)
    return Table(path, header, rows[1:], header=True)


def _normalized(value):
    return value.strip().replace("\\", "/").removeprefix("./").strip("/")


class ImageIndex:
    """The image files under a root: relative paths ('/'-separated), the same without their
    extension (unique ones only), both also lower-cased, and the folders that hold them."""

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
        folded = collections.defaultdict(list)
        for key, path in [*((p, p) for p in self.files), *self.stems.items()]:
            folded[key.lower()].append(path)
        self.folded = {key: paths[0] for key, paths in folded.items() if len(set(paths)) == 1}
        self._bases = None

    def find(self, base, value):
        """The image file `value` names under the folder `base` ('' = the root), or None: the
        path as written, without its extension, or in another case (img.jpg for IMG.JPG)."""
        key = f"{base}/{value}" if base else value
        if key in self.files:
            return key
        return self.stems.get(key) or self.folded.get(key.lower())

    def find_anywhere(self, value, first_base):
        """find() under `first_base`, else under the one other base folder that has it (images
        spread over sibling folders); a path that is absolute or starts outside the root (the
        '../input/pets/...' of a notebook) is tried from each of its trailing parts."""
        found = self.find(first_base, value)
        if found:
            return found
        parts = value.split("/")
        for start in range(len(parts)):
            tail = "/".join(parts[start:])
            hits = {self.find(base, tail) for base in self.bases()} - {None}
            if len(hits) == 1:
                return hits.pop()
        return None

    def bases(self):
        """The folders a column's values may be relative to: the root and every folder above
        an image, shallow ones first."""
        if self._bases is None:
            found = {""}
            for folder in self.folder_counts:
                while folder and folder not in found:
                    found.add(folder)
                    folder = os.path.dirname(folder)
            self._bases = sorted(found, key=lambda f: (f.count("/"), f))
        return self._bases


def _best_base(index, values):
    """(base folder, matches) that names the most image files among `values`."""
    sample = [_normalized(v) for v in values[:SAMPLED_VALUES] if v.strip()]
    best, best_count = "", -1
    for base in index.bases():
        count = sum(index.find(base, v) is not None for v in sample)
        if count > best_count:
            best, best_count = base, count
    if best_count < len(sample):  # spread over sibling folders, or paths from elsewhere
        best_count = sum(index.find_anywhere(v, best) is not None for v in sample)
    return best, best_count / max(1, len(sample))


VALIDATION_FLAG_NAMES = frozenset("is_valid is_val is_validation valid".split())  # fastai's
TRUE_VALUES, FALSE_VALUES = frozenset("true 1 yes".split()), frozenset("false 0 no".split())


def _split_column(table, exclude):
    """(the column whose values are the splits, or None; whether it is a true/false flag of
    the validation images, as fastai's is_valid)."""
    for name in table.columns:
        if name in exclude:
            continue
        values = {v.lower() for v in table.column(name) if v}
        if not values or len(values) > 8:
            continue
        if name.lower() in VALIDATION_FLAG_NAMES and values <= TRUE_VALUES | FALSE_VALUES:
            return name, True
        if values <= ALL_SPLIT_NAMES:
            return name, False
    return None, False


def _label_like(name):
    """A column name that says it holds labels: label, class_id, category_id, target, ..."""
    words = set(re.split(r"[^a-z]+", name.lower())) | {name.lower()}
    return bool(words & LABEL_COLUMN_NAMES)


def _label_candidates(table, exclude):
    """[(column, distinct values)] of the columns that may hold the labels: a few distinct
    values (at most half as many as rows; as many as rows for a label-like name)."""
    found = []
    for name in table.columns:
        if name in exclude or name.lower() in FOLD_COLUMN_NAMES | SPLIT_COLUMN_NAMES:
            continue
        values = [v for v in table.column(name) if v]
        distinct = len(set(values))
        limit = len(table.rows) if _label_like(name) else max(2, len(table.rows) // 2)
        if len(values) >= len(table.rows) / 2 and 2 <= distinct <= limit:
            found.append((name, distinct))
    return found


def _choose_label_column(candidates):
    """The one candidate, or the one with a label-like name; None when that is not clear."""
    if len(candidates) == 1:
        return candidates[0][0]
    named = [c for c, _ in candidates if _label_like(c)]
    return named[0] if len(named) == 1 else None


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
    """What a labels file gives: its columns, the base folder of the image paths, whether the
    split column is a true/false validation flag, and whether the label column was named (by
    the user, or like a label) rather than found by elimination."""

    def __init__(self, table, image_column, label_column, split_column, base, flag, named):
        self.table = table
        self.image_column, self.label_column = image_column, label_column
        self.split_column, self.base = split_column, base
        self.validation_flag, self.named = flag, named


def choose_columns(table, index, image_column="auto", label_column="auto"):
    """The Choice of `table`'s columns (explicit names win); ValueError saying what was found
    and the flags to choose when a column cannot be found."""
    scores = {}
    for name in table.columns:
        scores[name] = _best_base(index, table.column(name))
    if not is_auto(image_column) and image_column:
        image = _named_column(table, image_column, "image_column")
    else:
        # ties (a pandas index 0..n-1 beside files named 0.jpg..): the file names first
        named_files = {c: sum(map(has_image_extension, table.column(c))) for c in table.columns}
        image = max(table.columns, key=lambda c: (scores[c][1], named_files[c]))
        if scores[image][1] < MIN_IMAGE_MATCH:
            shown = ", ".join(f"{c} ({scores[c][1]:.0%})" for c in table.columns)
            raise NotALabelsFile(
                f"No column of the labels file {table.path} names image files under "
                f"{index.root} (share of values that do, in a sample: {shown}). Name it with "
                "--config.dataset.image_column=NAME."
            )
    base = scores[image][0]
    if table.header and index.find(base, _normalized(image)):  # the first row names an image
        headerless = Table(table.path, [str(i + 1) for i in range(len(table.columns))], [], False)
        headerless.rows = [table.columns, *table.rows]
        number = str(table.columns.index(image) + 1)
        label = label_column
        if not is_auto(label_column) and label_column in table.columns:
            label = str(table.columns.index(label_column) + 1)
        return choose_columns(headerless, index, number, label)
    split, flag = _split_column(table, {image})
    if not is_auto(label_column) and label_column:
        label = _named_column(table, label_column, "label_column")
        named = True
    else:
        candidates = _label_candidates(table, {image, split})
        label = _choose_label_column(candidates)
        if not candidates:
            raise NotALabelsFile(
                f"No column of the labels file {table.path} besides '{image}' can hold labels "
                "(2 or more distinct values, most rows filled): name it with "
                "--config.dataset.label_column=NAME."
            )
        if label is None:
            found = ", ".join(f"{c} ({n} values)" for c, n in candidates)
            raise ValueError(
                f"Cannot tell which column of the labels file {table.path} holds the labels: "
                f"{found}. Name it with --config.dataset.label_column=NAME (or "
                "--config.dataset.labels='' to use class folders instead)."
            )
        named = _label_like(label)
    if label == image:
        raise ValueError(
            f"The labels file {table.path}: the image and the label column are both '{label}': "
            "set --config.dataset.image_column and --config.dataset.label_column."
        )
    if split in (image, label):
        split, flag = None, False
    return Choice(table, image, label, split, base, flag, named)


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
    labelling = [(p, e) for p, e in refused if explicit or not isinstance(e, NotALabelsFile)]
    if not usable and labelling:  # a labels file of this folder that cannot be read as one
        raise labelling[0][1]
    if usable:
        for path, e in refused:
            logging.info("Not a labels file of %s: %s (%s)", root, os.path.basename(path), e)
        choice = usable[0]
        if not choice.named and _folders_label(ds):
            name = os.path.basename(choice.table.path)
            raise ValueError(
                f"Image folder {root} has class folders and the file {name}, whose column "
                f"'{choice.label_column}' could label its images too: choose with "
                f"--config.dataset.labels={name} (and label_column) or --config.dataset.labels='' "
                "(the class folders)."
            )
        return scan_labels(root, index, choice, ds.split_fractions, ds.strict)
    try:
        found = folder_scan.scan_folder(ds.path, ds.split_fractions, ds.strict)
    except ValueError as e:
        why = " ".join(f"{os.path.basename(p)}: {err}" for p, err in refused)
        raise ValueError(f"{e} Its labels file(s) could not be used either: {why}") from None
    names = ", ".join(os.path.basename(p) for p, _ in refused)
    logging.info("Image folder %s: %s labels no image; using the class folders.", root, names)
    return found


def _folders_label(ds) -> bool:
    """Whether the folder is also a valid root/<class>/* or root/<split>/<class>/* tree."""
    try:
        folder_scan.scan_folder(ds.path, ds.split_fractions, strict=False)
    except ValueError:
        return False
    return True


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
        path = index.find_anywhere(_normalized(value), choice.base)
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
            if choice.validation_flag:
                split = "validation" if split.lower() in TRUE_VALUES else "train"
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
