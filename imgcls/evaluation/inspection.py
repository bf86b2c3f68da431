"""`main.py --mode=inspect`: look at a dataset before training on it.

Writes W/inspect/: inspect.json and inspect.md (the resolved splits and what each 'auto' value
became and why, split sizes, class counts, imbalance, image sizes), class_distribution.png,
samples.png (a row of examples per class) and
augmentations.png (one training image through the configured augmentations many times).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from matplotlib.figure import Figure

from imgcls import data
from imgcls.config import resolve
from imgcls.data import preprocess
from imgcls.data._tf import AUTOTUNE, tf
from imgcls.data.pipelines import device as device_pipeline
from imgcls.data.sources import registry as sources
from imgcls.evaluation import report
from imgcls.run import files, interrupts

IMBALANCE_WARNING_RATIO = 3.0  # warn when the largest class has this many times the smallest
SIZE_SAMPLE = 1000  # images decoded per split for the image-size statistics
SAMPLES_PER_CLASS = 8
MAX_SAMPLE_CLASSES = 20  # rows of samples.png
SAMPLE_SCAN_LIMIT = 5000  # examples read at most while looking for samples of each class
AUGMENTED_COPIES = 23  # plus the original in augmentations.png


def _splits(config):
    ds = config.dataset
    names = {"train": ds.train_split, "validation": ds.validation_split, "eval": ds.eval_split}
    return {role: split for role, split in names.items() if split}


def image_size_stats(source, split):
    """min / median / max height and width of a split's decoded images (before resizing).

    As the source recorded them (an image folder records every image's size when prepared),
    else sampled (up to SIZE_SAMPLE images).
    """
    recorded = source.recorded_image_sizes(split)
    if recorded:
        return recorded
    ds = source.read(split, 0, 1).take(SIZE_SAMPLE).map(source.decode, AUTOTUNE)
    shapes = np.array([ex["image"].shape[:2] for ex in ds.as_numpy_iterator()])
    stats = {"sampled": int(len(shapes))}
    for axis, name in enumerate(("height", "width")):
        values = shapes[:, axis]
        stats[name] = {
            "min": int(values.min()),
            "median": float(np.median(values)),
            "max": int(values.max()),
        }
    return stats


def imbalance(counts, class_names):
    """max/min class count ratio of a split, and a warning text when it is strong."""
    counts = np.asarray(counts)
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        return float("inf"), f"classes with no examples: {', '.join(empty)}"
    ratio = float(counts.max() / counts.min())
    if ratio < IMBALANCE_WARNING_RATIO:
        return ratio, None
    big, small = class_names[int(counts.argmax())], class_names[int(counts.argmin())]
    return ratio, (
        f"strong class imbalance: '{big}' has {int(counts.max())} examples, '{small}' only "
        f"{int(counts.min())} ({ratio:.1f}x); consider config.dataset.balance='loss' or "
        "'sampling'"
    )


def _class_samples(config, info, split):
    """Up to SAMPLES_PER_CLASS eval-preprocessed images of each of the first classes."""
    wanted = min(info.num_classes, MAX_SAMPLE_CLASSES)
    samples = {c: [] for c in range(wanted)}
    seen = 0
    for batch in data.create_eval_iterator(config, info, split):
        mask = batch["mask"]
        for image, label in zip(batch["image"][mask], batch["label"][mask], strict=True):
            if label < wanted and len(samples[label]) < SAMPLES_PER_CLASS:
                samples[label].append(image)
        seen += int(batch["mask"].sum())
        full = all(len(v) == SAMPLES_PER_CLASS for v in samples.values())
        if full or seen >= SAMPLE_SCAN_LIMIT:
            break
    return samples


def plot_image_rows(rows, path, title):
    """A grid: one row of uint8 images per (label, images) pair."""
    columns = max(max((len(images) for _, images in rows), default=1), 1)
    fig = Figure(figsize=(1.3 * columns + 1.5, 1.3 * len(rows) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), columns, squeeze=False))
    for (label, images), row_axes in zip(rows, axes, strict=True):
        for k, ax in enumerate(row_axes):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(k < len(images))
            if k < len(images):
                image = np.asarray(images[k])
                gray = image.shape[-1] == 1
                ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None)
        row_axes[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title)
    with files.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=80)


def augmented_copies(config, info, image, label):
    """AUGMENTED_COPIES training augmentations of one decoded image (as training applies them)."""
    if data.resolve_pipeline(config, info, log=False).dataset.pipeline == "device":
        example = {"image": tf.constant(image), "label": tf.constant(label)}
        resized = preprocess.preprocess_eval(example, config, info.image_shape)["image"].numpy()
        augment = device_pipeline.batch_augmenter(config, info)
        keys = jax.random.split(jax.random.key(config.seed), AUGMENTED_COPIES)
        alternating = config.augment.alternating_flip

        def copy(k, key):  # the alternating flip: every other copy mirrored, as odd epochs are
            mirror = jnp.array([k % 2 == 1]) if alternating else None
            return np.asarray(augment(resized[None], key, mirror=mirror))[0]

        return [copy(k, key) for k, key in enumerate(keys)]
    copies = []
    for k in range(AUGMENTED_COPIES):
        key = tf.constant([config.seed, k], tf.int64)
        example = {"image": tf.constant(image), "label": tf.constant(label)}
        copies.append(preprocess.preprocess_train(example, key, config, info.image_shape))
    return [c["image"].numpy() for c in copies]


def inspect_dataset(config, workdir):
    """Writes W/inspect/ and returns its summary (also saved as inspect.json)."""
    with interrupts.doing(
        f"while inspecting the dataset: {workdir}/inspect is incomplete; run the same command again"
    ):
        return _inspect_dataset(config, workdir)


def _inspect_dataset(config, workdir):
    config, info, resolved = resolve.resolve_run(config)
    source = sources.get_source(config)
    out = os.path.join(workdir, "inspect")
    os.makedirs(out, exist_ok=True)
    files.remove_stale_partials(out)  # what a SIGKILL during an earlier inspection left
    names = list(info.class_names)
    splits = _splits(config)
    counts = {s: data.count_labels(config, info, s) for s in dict.fromkeys(splits.values())}
    summary = {
        "dataset": info.name,
        "num_classes": info.num_classes,
        "class_names": names,
        "image_shape_after_preprocessing": list(info.image_shape),
        "splits": {r: {"split": s, "examples": info.split_sizes[s]} for r, s in splits.items()},
        "class_counts": {s: c.tolist() for s, c in counts.items()},
        "image_sizes": {s: image_size_stats(source, s) for s in counts},
        "resolved": resolved,  # the splits, and what each 'auto' value became and why
    }
    facts, summary["warnings"] = source.describe()
    summary.update(facts)
    ratio, warning = imbalance(counts[config.dataset.train_split], names)
    summary["train_imbalance_ratio"] = ratio
    if warning:
        summary["warnings"].append(warning)
        logging.warning("%s", warning)

    report.plot_class_distribution(counts, names, os.path.join(out, "class_distribution.png"))
    samples = _class_samples(config, info, config.dataset.train_split)
    rows = [(names[c], images) for c, images in samples.items()]
    plot_image_rows(rows, os.path.join(out, "samples.png"), f"{info.name}: samples per class")

    raw = next(iter(source.read(config.dataset.train_split, 0, 1).take(1)))
    example = source.decode(raw)
    image, label = example["image"].numpy(), int(example["label"])
    copies = augmented_copies(config, info, image, label)
    per_row = (AUGMENTED_COPIES + 1) // 4
    grid = [image_for_grid(image, info.image_shape)] + copies
    aug_rows = [
        ("original, then\naugmented" if r == 0 else "", grid[r * per_row : (r + 1) * per_row])
        for r in range(4)
    ]
    policy = config.augment.policy
    title = f"augmentations of one '{names[label]}'" + (f" ({policy})" if policy != "none" else "")
    plot_image_rows(aug_rows, os.path.join(out, "augmentations.png"), title)
    summary["figures"] = ["class_distribution.png", "samples.png", "augmentations.png"]
    files.write_json(os.path.join(out, "inspect.json"), summary)
    _write_markdown(os.path.join(out, "inspect.md"), summary)
    summary["inspect_dir"] = out
    return summary


def image_for_grid(image, shape):
    """The original image as shown next to its augmentations (channels as the model sees)."""
    image = np.asarray(image)
    if image.shape[-1] != shape[-1]:
        image = np.repeat(image, shape[-1], axis=-1) if image.shape[-1] == 1 else image
    return image


def _write_markdown(path, summary):
    lines = [f"# Dataset {summary['dataset']}", ""]
    lines += [f"- **{w}**" for w in summary["warnings"]] + [""] if summary["warnings"] else []
    lines += ["## Settings resolved from the data", ""]
    lines += [f"- {note}" for note in summary["resolved"]] + [""]
    lines += ["| role | split | examples |", "| --- | --- | --- |"]
    for role, s in summary["splits"].items():
        lines.append(f"| {role} | `{s['split']}` | {s['examples']} |")
    lines += ["", "## Examples per class", ""]
    splits = list(summary["class_counts"])
    lines += ["| class | " + " | ".join(f"`{s}`" for s in splits) + " |"]
    lines += ["| --- |" + " --- |" * len(splits)]
    for c, name in enumerate(summary["class_names"]):
        row = " | ".join(str(summary["class_counts"][s][c]) for s in splits)
        lines.append(f"| {name} | {row} |")
    lines += ["", "## Image sizes (decoded, before resizing)", ""]
    lines += ["| split | images | height min / median / max | width min / median / max |"]
    lines += ["| --- | --- | --- | --- |"]
    for s, st in summary["image_sizes"].items():
        h, w = st["height"], st["width"]
        lines.append(
            f"| `{s}` | {st['sampled']} | {h['min']} / {h['median']:g} / {h['max']} | "
            f"{w['min']} / {w['median']:g} / {w['max']} |"
        )
    lines += [""] + [f"![{f}]({f})" for f in summary["figures"]] + [""]
    with files.atomic_open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def format_summary(summary: dict) -> str:
    """The console summary of inspect_dataset's result."""
    lines = [f"Dataset {summary['dataset']}: {summary['num_classes']} classes"]
    lines += [f"  {note}" for note in summary.get("resolved", ())]
    for role, split in summary["splits"].items():
        counts = summary["class_counts"][split["split"]]
        lines.append(
            f"  {role:<10} {split['split']:<20} {split['examples']:>8} examples, "
            f"{min(counts)}-{max(counts)} per class"
        )
    for split, stats in summary["image_sizes"].items():
        h, w = stats["height"], stats["width"]
        lines.append(
            f"  image sizes in {split} ({stats['sampled']} images): height "
            f"{h['min']}-{h['max']} (median {h['median']:g}), width {w['min']}-{w['max']} "
            f"(median {w['median']:g})"
        )
    lines += [f"  warning: {warning}" for warning in summary["warnings"]]
    lines.append(f"Report: {os.path.join(summary['inspect_dir'], 'inspect.md')}")
    return "\n".join(lines)
