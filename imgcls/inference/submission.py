"""Submission files: --mode=predict's predictions written in the shape of a template CSV.

Competitions and shared benchmarks give a sample_submission.csv whose header is `id,<class_1>,
...,<class_K>` (one probability per class) or `id,label` (one predicted class), one row per test
image. `--submission=TEMPLATE --output=FILE.csv` writes exactly that header and that row order:
each template id (with or without its extension, or a path ending in it) is matched to the
predicted image it names; probability columns are matched to the model's classes by name (in
the template's order, whatever the model's). A template class the model does not know, a model
class the template lacks, an id without a predicted image or one naming two images: one error
that lists them, and nothing is written.
"""

import csv
import os

from absl import logging

from imgcls.data import images
from imgcls.run import files

MAX_LISTED = 5


def _listed(values):
    values = sorted(values)
    shown = ", ".join(str(v) for v in values[:MAX_LISTED])
    return shown + (f" and {len(values) - MAX_LISTED} more" if len(values) > MAX_LISTED else "")


class Template:
    """A template read whole: the id column's name, the other columns, the ids in order."""

    def __init__(self, path, header, ids):
        self.path = path
        self.id_column, self.columns = header[0], header[1:]
        self.ids = ids

    def kind(self, class_names) -> str:
        """'label' (one column that is not a class name: the predicted class) or
        'probabilities' (a column per class; or, for two classes, one: the probability of that
        class, as binary tasks scored by AUC ask)."""
        if len(self.columns) == 1 and self._index(class_names, self.columns[0]) is None:
            return "label"
        return "probabilities"

    @staticmethod
    def _index(class_names, column):
        for i, name in enumerate(class_names):
            if name == column:
                return i
        folded = [i for i, name in enumerate(class_names) if name.lower() == column.lower()]
        return folded[0] if len(folded) == 1 else None

    def class_order(self, class_names) -> list[int]:
        """The model's class index of each probability column; ValueError listing both sets
        when they differ."""
        order = [self._index(class_names, c) for c in self.columns]
        unknown = [c for c, i in zip(self.columns, order, strict=True) if i is None]
        missing = set(range(len(class_names))) - set(order)
        if len(class_names) == 2 and len(order) == 1 and not unknown:
            missing = set()  # binary: the probability of the one class named
        if unknown or missing or len(set(order)) != len(order):
            raise ValueError(
                f"The template {self.path} has the class columns {_listed(self.columns)}, the "
                f"model the classes {_listed(class_names)}: "
                + (f"not known to the model: {_listed(unknown)}. " if unknown else "")
                + (
                    f"not in the template: {_listed(class_names[i] for i in missing)}. "
                    if missing
                    else ""
                )
                + "Use the template of the data this model was trained on."
            )
        return order


def read_template(path) -> Template:
    """The Template of a CSV file with a header row and at least one id row; ValueError naming
    the file otherwise."""
    if not path.lower().endswith(".csv"):
        raise ValueError(
            f"--submission={path}: give the template CSV (e.g. sample_submission.csv)."
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"--submission={path}: cannot read the template: {e}") from e
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ValueError(
            f"--submission={path}: a template needs a header (the id column, then a label "
            "column or one column per class) and one row per image."
        )
    return Template(path, [c.strip() for c in rows[0]], [row[0].strip() for row in rows[1:]])


def _keys(path):
    """The ways a template may spell the image file `path`: its name with and without the
    extension, and every trailing part of its path likewise."""
    parts = os.path.normpath(path).replace(os.sep, "/").split("/")
    keys = set()
    for i in range(len(parts)):
        tail = "/".join(parts[i:])
        keys |= {tail, os.path.splitext(tail)[0]}
    return keys


def match_ids(template, predicted_files) -> list[int]:
    """The index in `predicted_files` of each template id; ValueError listing the ids that name
    no predicted image or several."""
    by_key = {}
    for i, path in enumerate(predicted_files):
        for key in _keys(path):
            by_key.setdefault(key, []).append(i)
    found, missing, ambiguous = [], [], []
    folded = {}
    for key, hits in by_key.items():
        folded.setdefault(key.lower(), set()).update(hits)
    for ident in template.ids:
        key = ident.replace("\\", "/").removeprefix("./").strip("/")
        hits = by_key.get(key) or sorted(folded.get(key.lower(), ()))
        if len(hits) == 1:
            found.append(hits[0])
        elif hits:
            ambiguous.append(f"{ident} ({', '.join(predicted_files[i] for i in hits[:2])})")
        else:
            missing.append(ident)
    if missing or ambiguous:
        raise ValueError(
            f"The template {template.path} has {len(template.ids)} ids: "
            + (f"{len(missing)} name no predicted image ({_listed(missing)}). " if missing else "")
            + (f"{len(ambiguous)} name several ({_listed(ambiguous)}). " if ambiguous else "")
            + "Predict the folder of the images it lists (an unreadable image is listed among "
            "the errors above)."
        )
    extra = len(predicted_files) - len(set(found))
    if extra:
        logging.warning(
            "%d predicted image(s) are not in the template %s: left out of the submission.",
            extra,
            template.path,
        )
    return found


def check_output(output, template_path) -> None:
    """ValueError, before any work, unless `output` is a .csv other than the template."""
    if not output or not output.lower().endswith(".csv"):
        raise ValueError(
            f"--submission={template_path} writes a CSV: give --output=submission.csv (where)."
        )
    if os.path.abspath(output) == os.path.abspath(template_path):
        raise ValueError(f"--output={output} is the template itself: write somewhere else.")


def write_submission(template, result, class_names, output) -> None:
    """Writes `result`'s predictions (with 'probabilities') to `output` in the template's shape."""
    predictions = result["predictions"]
    rows = match_ids(template, [p["file"] for p in predictions])
    header = [template.id_column, *template.columns]
    kind = template.kind(class_names)
    order = template.class_order(class_names) if kind == "probabilities" else None
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with files.atomic_open(output, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for ident, row in zip(template.ids, rows, strict=True):
            probabilities = predictions[row]["probabilities"]
            if kind == "label":
                best = max(range(len(probabilities)), key=probabilities.__getitem__)
                writer.writerow([ident, class_names[best]])
            else:
                writer.writerow([ident, *(f"{probabilities[i]:.6f}" for i in order)])
    logging.info(
        "Wrote %d rows in the shape of %s (%s) to %s.",
        len(rows),
        template.path,
        "one probability per class" if kind == "probabilities" else "one label",
        images.printable_path(output),
    )
