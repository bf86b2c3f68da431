"""A folder of the user's own images as a TFDS dataset (config.dataset.name = 'folder').

Three layouts are recognised at config.dataset.path (the root):

  root/<split>/<class>/...   e.g. train/, validation/, test/: the split names are the folder names
  root/<class>/...           split into 'train', 'validation' and 'test' by split_fractions
  root/... + a labels file   a CSV/TSV naming each image's label (and maybe its split): see
                             folder_labels.py; config.dataset.labels

Class names are the sorted class folder names (the union over splits, so label ids agree across
splits); every file below a class folder, in nested folders too, belongs to that class. Hidden
files and folders (names starting with '.') are ignored. Without split folders, each file's split
is a function of a hash of its path relative to the root alone: adding or removing files never
moves another file to another split, and every class is split in about the given proportions.

The folder is prepared once into a TFDS dataset under config.dataset.data_dir: the builder
'imgcls_image_folder' with the builder config '<folder name>_<fingerprint>', where the
fingerprint covers every file's relative path, size and modification time and every setting that
changes the prepared data. An unchanged folder is therefore reused; adding, removing or modifying
a file prepares it again. Preparation streams over the files, decoding them with PIL in a thread
pool to validate them: JPEG and PNG files are stored as they are, any other format (BMP, GIF,
WebP, TIFF, CMYK or EXIF-rotated JPEG, ...) is converted with PIL and stored as PNG, grayscale
images as grayscale and all others as RGB; reading decodes them to config.dataset.channels, so
one preparation serves every channel count. Each split is stored class-interleaved
(folder_scan.stratified_order), so the validation part that validation_fraction carves off its
end is stratified. Unreadable files (not images, truncated, corrupt) are skipped with one
warning, or fail preparation when config.dataset.strict is set. The metadata saved with the
dataset (read_metadata) records the source, layout, per-split counts, skipped files, image sizes,
how many images are grayscale and the pixel mean and std per split: what config.dataset's
'auto' values are resolved from (imgcls.data.auto), without reading the images again.
"""

import collections
import concurrent.futures
import os
import threading
import time

import numpy as np
from absl import logging
from etils import epath

from imgcls.data import preprocess
from imgcls.data._tf import tf, tfds
from imgcls.data.images import load_image, printable_path
from imgcls.data.sources import folder_labels
from imgcls.data.sources.catalog import TFDSSource, prepare_builder
from imgcls.data.sources.folder_scan import (
    FORMAT_VERSION,
    config_name,
    fingerprint,
    stratified_order,
)
from imgcls.data.sources.image_stats import SizeRecorder, SplitPixels
from imgcls.values import is_auto

BUILDER_NAME = "imgcls_image_folder"
MAX_SKIPPED_LISTED = 20  # skipped files listed in the metadata and in the strict error
MAX_SKIPPED_WARNED = 5  # skipped files named in the warning
FILES_PER_TASK = 32  # files decoded per thread-pool task
TASKS_PER_WORKER = 4  # tasks in flight per worker thread (bounds memory, keeps order)
MAX_WORKERS = 32


def _check_channels(channels):
    """config.dataset.channels as 1 or 3, or None for 'auto' (resolved from the images)."""
    if is_auto(channels):
        return None
    if channels not in (1, 3):
        raise ValueError(
            f"config.dataset.channels={channels!r} must be 1 (grayscale), 3 (RGB) or 'auto' for "
            "an image folder: set --config.dataset.channels=3 or 1."
        )
    return int(channels)


def _load_batch(root, paths):
    results = []
    for path in paths:
        try:
            results.append(load_image(os.path.join(root, path)))
        except Exception as e:  # noqa: BLE001  (any failure to read or decode: skip the file)
            results.append(f"{type(e).__name__}: {e}")
    return results


def _num_workers():
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(2, min(MAX_WORKERS, 2 * cpus))


def _ordered_results(root, paths):
    """load_image's result (or the error text) for every path, in order, decoded in threads.

    At most TASKS_PER_WORKER tasks per worker are in flight, so memory stays bounded however
    many files there are. PIL releases the GIL while it reads and decodes.
    """
    workers = _num_workers()
    pending = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="imgcls-folder") as pool:
        for start in range(0, len(paths), FILES_PER_TASK):
            if len(pending) >= workers * TASKS_PER_WORKER:
                yield from pending.popleft().result()
            chunk = paths[start : start + FILES_PER_TASK]
            pending.append(pool.submit(_load_batch, root, chunk))
        while pending:
            yield from pending.popleft().result()


class ImageFolder(tfds.core.GeneratorBasedBuilder):
    """The images of one Scan of a folder; one builder config per folder state (fingerprint)."""

    name = BUILDER_NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # As digits.py: TFDS's own lookup of the code's folder needs importlib_resources otherwise.
    code_path = epath.Path(__file__)

    def __init__(self, *, scan, strict=False, data_dir=None):
        self._scan = scan
        self._strict = strict
        self._digest = fingerprint(scan)
        config = tfds.core.BuilderConfig(
            name=config_name(scan, self._digest),
            description=f"{scan.root} (layout {scan.layout}), fingerprint {self._digest}",
        )
        super().__init__(config=config, data_dir=data_dir)

    def _create_builder_config(self, builder_config, version):
        # A config made at run time for this folder, not one of BUILDER_CONFIGS: use it as it is
        # (TFDS accepts it too, but warns "Using custom data configuration" every time).
        if isinstance(builder_config, tfds.core.BuilderConfig):
            return builder_config
        return super()._create_builder_config(builder_config, version)

    def _info(self):
        scan = self._scan
        layout = {"split": "root/<split>/<class>/*", "class": "root/<class>/*"}.get(
            scan.layout, f"labelled by {scan.labels['file'] if scan.labels else 'a file'}"
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                f"The image folder {scan.root}: layout {layout}, {len(scan.class_names)} "
                "classes; grayscale images stored as grayscale."
            ),
            features=tfds.features.FeaturesDict(
                {
                    # Stored in their own colour mode; FolderSource decodes to the run's channels.
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=list(self._scan.class_names)),
                    "file": tfds.features.Text(),  # the path relative to the folder
                }
            ),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # keep stratified_order
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything is local.
        scan = self._scan
        logging.info(
            "Preparing the image folder %s (layout %s, %d classes, %d files: %s).",
            scan.root,
            scan.layout,
            len(scan.class_names),
            scan.num_files,
            ", ".join(f"{s} {len(f)}" for s, f in scan.files.items()),
        )
        self._skipped = []  # (path, error) of every skipped file
        self._sizes = SizeRecorder()
        self._grayscale = 0
        self._splits_left = len(scan.files)
        metadata = self.info.metadata
        metadata.update(
            format_version=FORMAT_VERSION,
            source=scan.root,
            layout=scan.layout,
            fingerprint=self._digest,
            split_fractions=list(scan.split_fractions) if scan.split_fractions else None,
            class_names=list(scan.class_names),
            labels=scan.labels,
            splits={},
        )
        return {split: self._generate_examples(split) for split in scan.files}

    def _generate_examples(self, split):
        entries = stratified_order(self._scan.files[split])
        paths = [path for path, *_ in entries]
        results = _ordered_results(self._scan.root, paths)
        sizes, pixels = SizeRecorder(), SplitPixels()
        counts = np.zeros(len(self._scan.class_names), np.int64)
        skipped, reencoded = 0, 0
        for (path, label, *_), result in zip(entries, results, strict=True):
            if isinstance(result, str):
                self._skipped.append((printable_path(path), result))
                skipped += 1
                continue
            data, height, width, converted, facts = result
            sizes.add(height, width)
            pixels.add(facts)
            counts[label] += 1
            reencoded += converted
            name = printable_path(path)
            yield name, {"image": data, "label": label, "file": name}
        if not len(sizes):
            raise ValueError(
                f"Split '{split}' of the image folder {self._scan.root} has no readable image "
                f"({len(entries)} files, none of them an image PIL can read); first: "
                f"{_listing(self._skipped[-len(entries) :], MAX_SKIPPED_WARNED)}. Add images "
                "or remove the folder (--config.dataset.path is the root)."
            )
        self._sizes.extend(sizes)
        self._grayscale += pixels.grayscale
        self.info.metadata["splits"][split] = {
            "examples": int(counts.sum()),
            "skipped": skipped,
            "reencoded": int(reencoded),
            "class_counts": counts.tolist(),
            "image_size": sizes.summary(),
            "pixels": pixels.summary(),
        }
        self._splits_left -= 1
        if not self._splits_left:  # the last split: everything is known
            self._finish()

    def _finish(self):
        if self._strict and self._skipped:
            raise ValueError(_strict_message(self._scan.root, len(self._skipped), self._skipped))
        self.info.metadata.update(
            num_skipped=len(self._skipped),
            skipped=[{"file": p, "error": e} for p, e in self._skipped[:MAX_SKIPPED_LISTED]],
            image_size=self._sizes.summary(),
            grayscale=self._grayscale,
        )


def _listing(skipped, limit):
    shown = ", ".join(f"{p} ({e})" for p, e in skipped[:limit])
    more = len(skipped) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def _strict_message(root, count, skipped):
    return (
        f"{count} file(s) of the image folder {root} are not readable images, and "
        f"config.dataset.strict=True: {_listing(skipped, MAX_SKIPPED_LISTED)}. Fix or remove "
        "them, or set --config.dataset.strict=False to skip them."
    )


_PREPARED = {}  # (folder, data_dir, settings) -> prepared builder, for this process
_LOCK = threading.Lock()


def clear_cache():
    """Forget the folders prepared in this process: the next use scans the folder again."""
    with _LOCK:
        _PREPARED.clear()


def prepared_builder(config):
    """The ImageFolder builder of config.dataset.path, prepared on first use.

    A process scans a folder once (later calls, e.g. from each evaluation, reuse the result, so
    a run sees one fixed state of the folder; clear_cache() forgets it). Preparation is reused
    while the folder is unchanged, and is safe when several processes start it at once.
    """
    ds = config.dataset
    _check_channels(ds.channels)
    root = os.path.abspath(os.path.expanduser(ds.path)) if ds.path else ""
    settings = (ds.data_dir, repr(ds.split_fractions), bool(ds.strict))
    key = (root, *settings, *_labels_settings(ds))
    with _LOCK:
        if key not in _PREPARED:
            builder = _prepare(config)
            _PREPARED[key] = builder
            # The same preparation, once config.dataset's 'auto' labels values are resolved.
            labels = builder.info.metadata.get("labels")
            chosen = (
                (labels["file"], labels["image_column"], labels["label_column"])
                if labels
                else ("", "auto", "auto")
            )
            _PREPARED.setdefault((root, *settings, *chosen), builder)
        return _PREPARED[key]


def _labels_settings(ds):
    """config.dataset's labels-file keys."""
    return (str(ds.labels), str(ds.image_column), str(ds.label_column))


def _prepare(config):
    ds = config.dataset
    strict = bool(ds.strict)
    scan = folder_labels.scan(ds)
    download_config = tfds.download.DownloadConfig(try_download_gcs=False)
    started = time.time()
    builder = prepare_builder(
        lambda: ImageFolder(scan=scan, strict=strict, data_dir=ds.data_dir or None),
        download_config,
    )
    if hasattr(builder, "_skipped"):  # prepared by this process, not found prepared
        logging.info(
            "Prepared the image folder %s in %.1fs into %s.",
            scan.root,
            time.time() - started,
            builder.data_dir,
        )
    else:
        logging.info(
            "Image folder %s (layout %s, %d classes) unchanged: using %s.",
            scan.root,
            scan.layout,
            len(scan.class_names),
            builder.data_dir,
        )
    builder._scan = None  # the file list is only needed to prepare; free it
    metadata = builder.info.metadata
    skipped = [(s["file"], s["error"]) for s in metadata.get("skipped", [])]
    count = int(metadata.get("num_skipped", 0))
    if count and strict:
        raise ValueError(_strict_message(scan.root, count, skipped))
    if count:
        logging.warning(
            "Skipped %d unreadable file(s) of the image folder %s (not images, truncated or "
            "corrupt): %s. Set config.dataset.strict=True to fail on them instead.",
            count,
            scan.root,
            _listing(skipped, MAX_SKIPPED_WARNED) + (" ..." if count > len(skipped) else ""),
        )
    return builder


def read_metadata(config):
    """What preparation recorded about config.dataset.path (prepares it if needed), as a dict.

    Keys: source, layout, fingerprint, split_fractions, class_names, splits (per split:
    examples, skipped, reencoded, class_counts, image_size, pixels), num_skipped, skipped (the
    first MAX_SKIPPED_LISTED as {'file', 'error'}), image_size ({'height', 'width',
    'shorter_side'}: min, median, max), grayscale (images stored grayscale), format_version;
    plus data_dir, where the prepared dataset is. pixels (imgcls.data.sources.image_stats): images,
    grayscale, mean_rgb, std_rgb, mean_gray, std_gray, in [0, 1] units.
    """
    builder = prepared_builder(config)
    return {**dict(builder.info.metadata), "data_dir": os.fspath(builder.data_dir)}


class FolderSource(TFDSSource):
    """The image folder config.dataset.path as a source (prepared on first use).

    Images are decoded to config.dataset.channels; with 'auto' (not resolved yet) the channel
    count is unknown and only the metadata (split sizes, image_statistics) is available.
    """

    def __init__(self, config):
        super().__init__(config, prepared_builder(config))
        self.metadata = dict(self.builder.info.metadata)
        self.channels = _check_channels(config.dataset.channels)
        sizes = self.metadata["image_size"]
        height, width = sizes["height"], sizes["width"]
        uniform = height["min"] == height["max"] and width["min"] == width["max"]
        self.image_shape = (
            (height["max"], width["max"], self.channels) if uniform else (None, None, self.channels)
        )

    def decode(self, raw):
        """Decodes the stored JPEG or PNG to config.dataset.channels; the label becomes int32."""
        if self.channels is None:
            raise ValueError("config.dataset.channels='auto' must be resolved before decoding.")
        image = preprocess.decode(raw["image"], self.channels)
        image = tf.ensure_shape(image, (None, None, self.channels))
        return {"image": image, "label": tf.cast(raw["label"], tf.int32)}

    def resolve_settings(self, config):
        """config.dataset.labels, image_column and label_column as found at preparation (the
        labels file's path and column names; '' for class folders), so that W/config.json, eval
        and a resume read the same file the same way."""
        ds, labels = config.dataset, self.metadata.get("labels")
        with ds.ignore_type():
            ds.labels = labels["file"] if labels else ""
            if labels:
                ds.image_column, ds.label_column = labels["image_column"], labels["label_column"]
        return config, [folder_labels.describe(labels, self.metadata["source"])] if labels else []

    def recorded_image_sizes(self, split):
        """Every image's size was recorded at preparation."""
        recorded = self.metadata["splits"].get(split)
        if not recorded:
            return None
        sizes = recorded["image_size"]
        return {"sampled": recorded["examples"], "height": sizes["height"], "width": sizes["width"]}

    def typical_image_shape(self):
        """Images vary in size: the median height and width recorded at preparation."""
        sizes = self.metadata["image_size"]
        return (sizes["height"]["median"], sizes["width"]["median"], self.channels or 3)

    def image_statistics(self, split):
        """Recorded at preparation (read_metadata): sizes and grayscale count over every image,
        pixel mean and std of `split`."""
        recorded = self.metadata["splits"].get(split)
        return {
            "images": sum(s["examples"] for s in self.metadata["splits"].values()),
            "grayscale": int(self.metadata["grayscale"]),
            **self.metadata["image_size"],
            "pixels": {"split": split, **recorded["pixels"]} if recorded else None,
        }

    def describe(self):
        facts = {"folder": {"source": self.metadata["source"], "layout": self.metadata["layout"]}}
        facts["folder"]["data_dir"] = os.fspath(self.builder.data_dir)
        labels = self.metadata.get("labels")
        if labels:
            keys = ("file", "image_column", "label_column", "split_column", "base", "rows", "used")
            facts["folder"]["labels"] = {k: labels[k] for k in keys}
        warnings = []
        if self.metadata.get("num_skipped"):
            first = ", ".join(s["file"] for s in self.metadata["skipped"][:5])
            warnings.append(
                f"{self.metadata['num_skipped']} unreadable file(s) skipped at preparation: {first}"
            )
        return facts, warnings
