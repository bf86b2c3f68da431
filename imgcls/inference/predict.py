"""Predictions of a trained model on image files: `main.py --mode=predict --workdir=W a.jpg dir/`.

A Predictor needs nothing but the workdir: the config (W/config.json), the class names and image
shape (W/dataset_info.json, written by training) and a checkpoint. Images go through the same
decoding and center crop as evaluation (data.preprocess.preprocess_encoded) and through one
jitted function, compiled once for a fixed batch size (shorter batches are padded), that maps
uint8 images to class probabilities. `--mode=serve` and `--mode=export` build on it.

Decoding image files needs TensorFlow (the evaluation's own resize); it is imported when the
first file is decoded, so a Predictor of preprocessed arrays, and export's jax.export artifact,
run without it.
"""

import concurrent.futures
import csv
import functools
import math
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from imgcls import models, parallel
from imgcls.data import images
from imgcls.data.images import BrokenImage, NotAnImage
from imgcls.data.normalize import mean_std, normalize
from imgcls.evaluation import tta as tta_lib
from imgcls.inference import submission
from imgcls.run import files, interrupts, restore
from imgcls.run import workdir as workdir_files

DEFAULT_TOP_K = 5
PREPROCESS_THREADS = 8  # images decoded at once (PIL and TF release the GIL)
PREDICT_BATCH_SIZE = 64  # largest default batch of --mode=predict


def probabilities_fn(model, mean, std, tta="none"):
    """f(variables, uint8 images [N, H, W, C]) -> float32 class probabilities [N, K]; `tta`
    (imgcls.evaluation.tta.MODES) averages the logits of transformed views first, as evaluation
    does."""

    def probabilities(variables, images):
        def logits_fn(x):
            return model.apply(variables, x, train=False)

        logits = tta_lib.logits(tta, logits_fn, normalize(images, mean, std))
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    return probabilities


class Predictor:
    """A trained model of `workdir` ready to predict: preprocessing, weights, compiled function.

    `weights` is 'ema' or 'raw' (default: ema when the run kept an average of its weights),
    `tta` one of imgcls.evaluation.tta.MODES (default: the run's config.eval_tta).
    """

    def __init__(
        self, workdir, checkpoint=None, batch_size=None, compile=True, weights=None, tta=None
    ):
        self.workdir = workdir
        self.config = config = workdir_files.load_config(workdir)
        self.weights = restore.check_weights(weights, config)
        self.tta = tta_lib.check_mode(tta, config)
        info = restore.saved_dataset_info(workdir, config)
        self.class_names = tuple(info["class_names"])
        self.image_shape = tuple(int(d) for d in info["image_shape"])
        self.model = models.from_config(config, len(self.class_names))
        self.variables, self.step, self.checkpoint = restore.restore_variables(
            workdir, self.model, self.image_shape, checkpoint, self.weights
        )
        self.batch_size = int(batch_size or min(config.eval_batch_size, PREDICT_BATCH_SIZE))
        if self.batch_size <= 0:
            raise ValueError(f"The batch size must be positive, got {self.batch_size}.")
        self.probabilities_fn = probabilities_fn(self.model, *mean_std(config), self.tta)
        self._compiled = self._preprocess_fn = None
        self._lock = threading.Lock()
        if compile:  # export only needs the weights and the function
            batch = jax.ShapeDtypeStruct((self.batch_size, *self.image_shape), jnp.uint8)
            self.variables = jax.device_put(self.variables)
            self._compiled = (
                jax.jit(self.probabilities_fn, compiler_options=parallel.compiler_options())
                .lower(self.variables, batch)
                .compile()
            )
        logging.info(
            "Loaded %s (%s checkpoint, step %d, %s weights, TTA %s): %d classes, images %s, "
            "batch %d.",
            workdir,
            self.checkpoint,
            self.step,
            self.weights,
            self.tta,
            len(self.class_names),
            "x".join(map(str, self.image_shape)),
            self.batch_size,
        )

    def preprocess(
        self, data: bytes, max_pixels=images.MAX_PIXELS, max_decoded_pixels=None
    ) -> np.ndarray:
        """Encoded image bytes -> uint8 [H, W, C], as evaluation preprocesses its examples.

        An image more than twice the size that the eval resize needs is first shrunk by PIL
        (images.encode_image: a JPEG decodes at 1/2 to 1/8 of its size), which bounds the
        memory a large photo takes and changes the resized pixels by a few levels at most.
        Raises NotAnImage, BrokenImage, or ImageTooLarge for an image of more than max_pixels
        pixels, whose decoding would hold more than max_decoded_pixels, or whose center-crop
        resize would be larger than max_pixels (all checked before it is decoded).
        """
        from imgcls.data._tf import tf  # (see the module docstring)

        stored, height, width, _ = images.read_image(
            data, self.image_shape[-1], max_pixels, self.min_decoded_size, max_decoded_pixels
        )
        dataset = self.config.dataset
        images.check_center_crop_size(
            height, width, int(dataset.image_size), float(dataset.crop_fraction), max_pixels
        )
        try:
            return self._preprocess(stored).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError) as e:
            # PIL read it, TensorFlow's stricter decoder (e.g. of a bad PNG checksum) did not
            raise BrokenImage(f"a corrupt image ({e.message.splitlines()[0]})") from None

    @property
    def min_decoded_size(self) -> tuple[int, int]:
        """(height, width) twice the eval resize's target: larger images may be shrunk first."""
        size = int(self.config.dataset.image_size)
        if size <= 0:  # resized to the model's shape as it is
            return (2 * self.image_shape[0], 2 * self.image_shape[1])
        side = math.ceil(size / float(self.config.dataset.crop_fraction))
        return (2 * side, 2 * side)

    def _preprocess(self, stored):
        from imgcls.data._tf import tf  # (see the module docstring)

        with self._lock:  # one traced function, even when threads start at once
            if self._preprocess_fn is None:
                self._preprocess_fn = self._make_preprocess_fn()
        return self._preprocess_fn(tf.constant(stored))

    def _make_preprocess_fn(self):
        from imgcls.data import preprocess  # (see the module docstring)
        from imgcls.data._tf import tf

        fn = tf.function(
            functools.partial(
                preprocess.preprocess_encoded,
                image_size=int(self.config.dataset.image_size),
                crop_fraction=float(self.config.dataset.crop_fraction),
                shape=self.image_shape,
            ),
            input_signature=[tf.TensorSpec([], tf.string)],
        )
        return fn.get_concrete_function()  # traced here, once (concurrent first calls would not)

    def predict_images(self, images) -> np.ndarray:
        """Class probabilities [N, K] of preprocessed uint8 images [N, H, W, C], any N."""
        images = np.asarray(images, dtype=np.uint8)
        if images.shape[1:] != self.image_shape:
            raise ValueError(
                f"Images of shape {images.shape[1:]} given; the model takes {self.image_shape}."
            )
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            padded = np.zeros((self.batch_size, *self.image_shape), np.uint8)
            padded[: len(chunk)] = chunk
            out.append(np.asarray(self._compiled(self.variables, padded))[: len(chunk)])
        if not out:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(out)

    def top_k(self, probabilities, k=DEFAULT_TOP_K) -> list[list[dict]]:
        """[{'class', 'probability'}, ...] of the k most likely classes, per row."""
        if int(k) < 1:
            raise ValueError(f"top_k={k}: ask for at least 1 class.")
        k = min(int(k), len(self.class_names))
        order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
        return [
            [{"class": self.class_names[i], "probability": float(p[i])} for i in row]
            for p, row in zip(probabilities, order, strict=True)
        ]


def find_images(paths) -> tuple[list[str], list[dict]]:
    """(image files, errors): files as given; folders walked (symlinks too) for files with an
    image extension, sorted. Other files in folders are counted in the log, not predicted."""
    files, errors, skipped = [], [], 0
    for path in paths:
        if os.path.isdir(path):
            found, seen = [], set()
            for root, dirs, names in os.walk(path, followlinks=True):
                real = os.path.realpath(root)
                if real in seen:  # a symlink loop, or a folder linked twice
                    dirs[:] = []
                    continue
                seen.add(real)
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in names:
                    if name.startswith("."):
                        continue
                    if images.has_image_extension(name):
                        found.append(os.path.join(root, name))
                    else:
                        skipped += 1
            if not found:
                errors.append({"file": path, "error": "folder holds no image files"})
            files += sorted(found)
        elif os.path.exists(path):
            files.append(path)
        else:
            errors.append({"file": path, "error": "no such file or folder"})
    if skipped:
        logging.info(
            "Skipped %d file(s) without an image extension in the folders; name them as "
            "arguments to predict them anyway.",
            skipped,
        )
    return files, errors


def check_top_k(top_k) -> None:
    """ValueError, before any work, for a --top_k below 1."""
    if int(top_k) < 1:
        raise ValueError(f"--top_k={top_k}: give at least 1.")


def default_batch_size(num_images: int) -> int:
    """A batch for predicting num_images: a power of two up to PREDICT_BATCH_SIZE, so a few
    images do not compile and run a padded batch of eval_batch_size (1,000 for ImageNet)."""
    return min(PREDICT_BATCH_SIZE, 1 << max(0, num_images - 1).bit_length())


def _load(predictor, path):
    """The preprocessed image of `path`, or the text of why it cannot be read.

    Local files have no pixel limit (a 100-megapixel photo is fine here); serve has one.
    """
    try:
        with open(path, "rb") as f:
            return predictor.preprocess(f.read(), max_pixels=None)
    except (NotAnImage, BrokenImage, OSError) as e:
        return str(e)
    except Exception as e:  # noqa: BLE001  (whatever else fails on one file, the rest go on)
        return f"could not be read ({type(e).__name__}: {e})"


def predict_files(predictor, paths, top_k=DEFAULT_TOP_K) -> dict:
    """Top-k predictions of every image under `paths`; unreadable files are listed as errors.

    Returns {'workdir', 'checkpoint', 'step', 'predictions': [{'file', 'top_k'}], 'errors':
    [{'file', 'error'}]}, predictions in file order.
    """
    return predict_found(predictor, *find_images(paths), top_k=top_k)


def predict_paths(
    workdir,
    paths,
    checkpoint=None,
    batch_size=None,
    top_k=DEFAULT_TOP_K,
    output=None,
    weights=None,
    tta=None,
    submission=None,
) -> dict:
    """--mode=predict: predict_files of `paths` with the model of `workdir` (its `weights`, with
    test-time augmentation `tta`: see Predictor), written to `output` (.csv or .json, checked
    before any work) when given; with `submission` (a template CSV) `output` is written in the
    template's shape instead (imgcls.inference.submission)."""
    unwritten = f"{output} was not written" if output else "nothing was written"
    with interrupts.doing(f"while predicting: {unwritten}; run the same command again"):
        return _predict_paths(
            workdir, paths, checkpoint, batch_size, top_k, output, weights, tta, submission
        )


def _predict_paths(workdir, paths, checkpoint, batch_size, top_k, output, weights, tta, template):
    check_top_k(top_k)
    if not paths:
        raise ValueError("--mode=predict needs image files or folders: ... a.jpg photos/")
    if template:
        submission.check_output(output, template)
        template = submission.read_template(template)
    elif output:
        check_output_path(output)
    files, errors = find_images(paths)
    batch_size = batch_size or default_batch_size(len(files))
    predictor = Predictor(workdir, checkpoint, batch_size, weights=weights, tta=tta)
    if template and template.kind(predictor.class_names) == "probabilities":
        template.class_order(predictor.class_names)  # before predicting: the classes agree
    result = predict_found(predictor, files, errors, top_k, probabilities=bool(template))
    if template:
        submission.write_submission(template, result, predictor.class_names, output)
        for p in result["predictions"]:
            del p["probabilities"]
    elif output:
        write_output(result, output)
    return result


def predict_found(predictor, files, errors, top_k=DEFAULT_TOP_K, probabilities=False) -> dict:
    """predict_files of find_images' (files, errors), for callers that walked the paths; each
    prediction also holds every class's probability (in class order) with `probabilities`."""
    errors = list(errors)
    predictions = []
    with concurrent.futures.ThreadPoolExecutor(PREPROCESS_THREADS) as pool:
        for start in range(0, len(files), predictor.batch_size):
            chunk = files[start : start + predictor.batch_size]
            loaded = list(pool.map(functools.partial(_load, predictor), chunk))
            good = [(f, x) for f, x in zip(chunk, loaded, strict=True) if not isinstance(x, str)]
            errors += [
                {"file": f, "error": x}
                for f, x in zip(chunk, loaded, strict=True)
                if isinstance(x, str)
            ]
            if good:
                probs = predictor.predict_images(np.stack([x for _, x in good]))
                for (f, _), top, row in zip(
                    good, predictor.top_k(probs, top_k), probs, strict=True
                ):
                    predictions.append({"file": f, "top_k": top})
                    if probabilities:
                        predictions[-1]["probabilities"] = row.tolist()
    return {
        "workdir": os.path.abspath(predictor.workdir),
        "checkpoint": predictor.checkpoint,
        "step": predictor.step,
        "weights": predictor.weights,
        "tta": predictor.tta,
        "predictions": predictions,
        "errors": errors,
    }


def format_table(result) -> str:
    """The console table: one line per image with its top-k classes and probabilities.

    File names that are not UTF-8 are shown with backslash escapes."""
    rows = [
        (
            images.printable_path(p["file"]),
            "  ".join(f"{t['class']} {t['probability']:.3f}" for t in p["top_k"]),
        )
        for p in result["predictions"]
    ]
    width = max([len("file"), *(len(f) for f, _ in rows)])
    k = len(result["predictions"][0]["top_k"]) if rows else 0
    lines = [f"{'file':<{width}}  top-{k} (class probability)"] if rows else []
    lines += [f"{f:<{width}}  {text}" for f, text in rows]
    lines += [f"error: {images.printable_path(e['file'])}: {e['error']}" for e in result["errors"]]
    return "\n".join(lines)


def format_summary(result, output=None) -> str:
    """The console summary of --mode=predict: the table, the output file, the counts."""
    lines = [format_table(result)]
    if output:
        lines.append(f"Predictions: {output}")
    used = [f"{result['checkpoint']} checkpoint", f"step {result['step']}"]
    lines.append(
        f"{len(result['predictions'])} image(s) predicted, {len(result['errors'])} error(s) "
        f"({', '.join(used + tta_lib.describe(result))})."
    )
    return "\n".join(lines)


def check_output_path(path) -> str:
    """The format ('.csv' or '.json') of an --output path; ValueError for any other."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".json"):
        raise ValueError(f"--output={path}: give a file name ending in .csv or .json.")
    return ext


def write_output(result, path) -> None:
    """Writes the predictions to `path`: .json as given, .csv one row per file."""
    ext = check_output_path(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.remove_stale_partials(os.path.dirname(os.path.abspath(path)))
    if ext == ".json":
        files.write_json(path, result)
        return
    k = max([len(p["top_k"]) for p in result["predictions"]] or [0])
    header = ["file"]
    for i in range(1, k + 1):
        header += [f"class_{i}", f"probability_{i}"]
    # surrogateescape: file names that are not UTF-8 are written as their original bytes
    with files.atomic_open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow([*header, "error"])
        for p in result["predictions"]:
            cells = [p["file"]]
            for t in p["top_k"]:
                cells += [t["class"], f"{t['probability']:.6f}"]
            writer.writerow([*cells, *[""] * (len(header) - len(cells)), ""])
        for e in result["errors"]:
            writer.writerow([e["file"], *[""] * (len(header) - 1), e["error"]])
