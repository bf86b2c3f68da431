"""The same images labelled by class folders and by a CSV file: accuracy, wall time, submission.

Builds, from ../shared/data/flowers5.tar.gz (or --archive), a held-back unlabelled test set
(every `--holdout`-th image of each class) and two copies of the rest:

  classes/<class>/<name>.jpg                      labelled by folders
  csv/train/<id>.jpg + csv/labels.csv (id,species)   labelled by a file, ids without extension
  csv/test/<id>.jpg + csv/sample_submission.csv      one probability column per class
  csv_split/train/<id>.jpg + csv_split/labels.csv (id,species,split)   the split column holds
                                                  the split the class folders' hash gives

then trains `configs/folder_cnn.py` with only dataset.path set (plus data_dir and workdir) on
each, one after the other, and predicts the held-back folder with --submission, scoring the
submission against the true labels. Prints each run's final test accuracy, wall time and the
submission's accuracy. The two automatic splits differ (each is a hash of the file's path), so
those accuracies agree to within the split-to-split spread; csv_split has the class folders'
own splits (the same test images; the stored order, a hash of the path, still differs).

    python benchmarks/csv_labels.py [--epochs N] [--keep DIR]
"""

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from imgcls.data.sources import folder_scan  # noqa: E402

FRACTIONS = (0.8, 0.1, 0.1)  # configs/folder_cnn.py's split_fractions
ARCHIVE = os.path.join(os.path.dirname(ROOT), "shared", "data", "flowers5.tar.gz")


def build(archive, where, holdout):
    """(classes root, csv root, {test id: true class}) under `where`."""
    with tarfile.open(archive) as tar:
        tar.extractall(os.path.join(where, "raw"), filter="data")
    raw = os.path.join(where, "raw", "flowers")
    classes_root, csv_root = os.path.join(where, "classes"), os.path.join(where, "csv")
    split_root = os.path.join(where, "csv_split")
    labels, truth = [], {}
    number = 0
    for name in sorted(os.listdir(raw)):
        for i, file in enumerate(sorted(os.listdir(os.path.join(raw, name)))):
            source = os.path.join(raw, name, file)
            ident = f"{number:05d}"
            number += 1
            if i % holdout == 0:
                os.makedirs(os.path.join(csv_root, "test"), exist_ok=True)
                shutil.copy(source, os.path.join(csv_root, "test", f"{ident}.jpg"))
                truth[ident] = name
                continue
            os.makedirs(os.path.join(classes_root, name), exist_ok=True)
            shutil.copy(source, os.path.join(classes_root, name, file))
            for root in (csv_root, split_root):
                os.makedirs(os.path.join(root, "train"), exist_ok=True)
                shutil.copy(source, os.path.join(root, "train", f"{ident}.jpg"))
            split = folder_scan.assign_split(f"{name}/{file}", FRACTIONS)
            labels.append((ident, name, split))
    class_names = sorted({name for _, name, _ in labels})
    with open(os.path.join(csv_root, "labels.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "species"])
        writer.writerows(row[:2] for row in labels)
    with open(os.path.join(split_root, "labels.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "species", "split"])
        writer.writerows(labels)
    with open(os.path.join(csv_root, "sample_submission.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *class_names])
        for ident in sorted(truth, reverse=True):  # another order than the files'
            writer.writerow([ident, *[f"{1 / len(class_names):.4f}"] * len(class_names)])
    return classes_root, csv_root, split_root, truth


def run(args, log):
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True
    )
    elapsed = time.time() - started
    with open(log, "w") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode}); see {log}")
    return proc.stdout + proc.stderr, elapsed


def train(path, where, name, epochs):
    workdir = os.path.join(where, f"w_{name}")
    args = [
        "--config=configs/folder_cnn.py",
        f"--config.dataset.path={path}",
        f"--config.dataset.data_dir={os.path.join(where, 'tfds')}",
        f"--workdir={workdir}",
    ]
    if epochs:
        args.append(f"--config.num_epochs={epochs}")
    out, elapsed = run(args, os.path.join(where, f"{name}.log"))
    accuracy = float(re.search(r"Final test accuracy: ([0-9.]+)", out).group(1))
    chosen = [line.split("] ", 1)[-1] for line in out.splitlines() if "labels: " in line]
    return workdir, accuracy, elapsed, chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=ARCHIVE)
    parser.add_argument("--holdout", type=int, default=10, help="every N-th image held back")
    parser.add_argument("--epochs", type=int, default=0, help="0: the config's")
    parser.add_argument("--keep", default="", help="build in this folder and keep it")
    args = parser.parse_args()
    if not os.path.exists(args.archive):
        sys.exit(f"{args.archive} not found: give --archive=flowers5.tar.gz")
    where = args.keep or tempfile.mkdtemp(prefix="csv_labels_")
    os.makedirs(where, exist_ok=True)
    classes_root, csv_root, split_root, truth = build(args.archive, where, args.holdout)
    print(f"built in {where}: {len(truth)} held-back test images")
    rows = []
    runs = (
        ("class folders", classes_root, "classes"),
        ("labels.csv", csv_root, "csv"),
        ("labels.csv with the class folders' split column", split_root, "csv_split"),
    )
    for name, path, short in runs:
        workdir, accuracy, elapsed, chosen = train(path, where, short, args.epochs)
        rows.append((name, accuracy, elapsed, workdir))
        for line in chosen:
            print(f"  {line}")
    output = os.path.join(where, "submission.csv")
    template = os.path.join(csv_root, "sample_submission.csv")
    run(
        [
            "--mode=predict",
            f"--workdir={rows[1][3]}",
            os.path.join(csv_root, "test"),
            f"--submission={template}",
            f"--output={output}",
        ],
        os.path.join(where, "predict.log"),
    )
    with open(output, newline="") as f:
        written = list(csv.reader(f))
    with open(template, newline="") as f:
        expected = list(csv.reader(f))
    header, body = written[0], written[1:]
    correct = sum(
        truth[row[0]] == header[1 + max(range(len(row) - 1), key=lambda i: float(row[1 + i]))]
        for row in body
    )
    print("\n| labels | final test accuracy | wall (prepare + train + report) |")
    print("| --- | --- | --- |")
    for name, accuracy, elapsed, _ in rows:
        print(f"| {name} | {accuracy:.4f} | {elapsed:.0f} s |")
    same = header == expected[0] and [r[0] for r in body] == [r[0] for r in expected[1:]]
    print(
        f"\nsubmission.csv: {len(body)} rows, header and row order "
        f"{'as' if same else 'NOT as'} the template; accuracy on the held-back images "
        f"{correct / len(body):.4f} ({correct}/{len(body)})"
    )
    if not args.keep:
        shutil.rmtree(where)


if __name__ == "__main__":
    main()
