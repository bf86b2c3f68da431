"""Export a trained model out of its workdir: `main.py --mode=export --workdir=W --export_dir=E`.

E/saved_model/<step>/   a TensorFlow SavedModel (jax2tf, native serialization) for TF Serving
                        and `tf.saved_model.load`; the checkpoint's step is TF Serving's
                        version. Its `serving_default` signature takes encoded images
                        (`image_bytes`: string [N], JPEG/PNG/GIF/BMP) and does the eval
                        preprocessing inside; `predict_images` takes preprocessed uint8 images.
E/jax/model.jax_export  a serialized `jax.export` of f(variables, uint8 images [N, H, W, C]) ->
E/jax/variables.msgpack probabilities, and its weights (flax.serialization): JAX-only serving,
                        see `load_jax_export`.
E/model_info.json       class names, image shape and size, preprocessing, source checkpoint.

Both artifacts are lowered for CPU, CUDA and TPU and take any batch size. The SavedModel keeps
the weights as variables (not graph constants), so ResNet-50 stays far from protobuf limits.
"""

import errno
import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import serialization

from imgcls.inference import predict
from imgcls.run import files, interrupts

EXPORT_FORMAT = "imgcls-export-1"
PLATFORMS = ("cpu", "cuda", "tpu")
INFO_FILE = "model_info.json"
SAVED_MODEL_DIR = "saved_model"  # TF Serving's model base path: it holds <version>/
JAX_EXPORT_FILE = os.path.join("jax", "model.jax_export")
JAX_VARIABLES_FILE = os.path.join("jax", "variables.msgpack")


def _model_info(predictor, workdir):
    config = predictor.config
    return {
        "format": EXPORT_FORMAT,
        "workdir": os.path.abspath(workdir),
        "checkpoint": predictor.checkpoint,
        "step": predictor.step,
        "weights": predictor.weights,
        "tta": predictor.tta,
        "model": config.model.name,
        "class_names": list(predictor.class_names),
        "image_shape": list(predictor.image_shape),
        "image_size": int(config.dataset.image_size),
        "crop_fraction": float(config.dataset.crop_fraction),
        "mean": list(config.dataset.mean),
        "std": list(config.dataset.std),
        "preprocessing": (
            "decode (channels = image_shape[-1]); image_size > 0: resize the shorter side to "
            "image_size / crop_fraction (bilinear, antialiased) and crop the center; else resize "
            "to image_shape. The exported functions normalize with mean/std themselves."
        ),
        "platforms": list(PLATFORMS),
        "saved_model": os.path.join(SAVED_MODEL_DIR, str(predictor.step)),
        "saved_model_signatures": {
            "serving_default": "image_bytes: string [N] -> probabilities [N, K], class_names "
            "[N, K], top_class [N], top_probability [N]",
            "predict_images": "images: uint8 [N, H, W, C] (preprocessed) -> probabilities [N, K]",
        },
        "jax_export": JAX_EXPORT_FILE,
        "jax_variables": JAX_VARIABLES_FILE,
    }


def export_model(workdir, export_dir, checkpoint=None, weights=None, tta=None) -> dict:
    """Writes the SavedModel, the jax.export artifact and model_info.json into `export_dir`;
    `weights` and `tta` as predict.Predictor takes them (the exported functions include the
    test-time augmentation).

    The export is written next to `export_dir` (E.partial) and moved into place when complete,
    so a failed export leaves neither a half-written model nor its staging folder. An existing
    imgcls export in `export_dir` is replaced; any other non-empty directory is an error.
    """
    unwritten = f"--export_dir={export_dir} was not written; run the same command again"
    with interrupts.doing(f"while exporting {workdir}: {unwritten}"):
        return _export_model(workdir, export_dir, checkpoint, weights, tta)


def _export_model(workdir, export_dir, checkpoint, weights, tta):
    if not export_dir:
        raise ValueError("--mode=export needs --export_dir=E, the directory to write.")
    export_dir = os.path.abspath(export_dir)
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        if not os.path.exists(os.path.join(export_dir, INFO_FILE)):
            raise ValueError(
                f"--export_dir={export_dir} is a non-empty directory that holds no imgcls export; "
                "give a new or empty directory."
            )
    predictor = predict.Predictor(workdir, checkpoint, compile=False, weights=weights, tta=tta)
    info = _model_info(predictor, workdir)
    staging = export_dir.rstrip(os.sep) + ".partial"
    replaced = export_dir.rstrip(os.sep) + ".replaced"
    for leftover in (staging, replaced):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        os.makedirs(os.path.join(staging, "jax"))
        _write_jax_export(predictor, staging)
        where = info["saved_model"]
        saved_model = os.path.join(staging, where)
        _write_saved_model_or_say_why(predictor, saved_model, os.path.join(export_dir, where))
        files.write_json(os.path.join(staging, INFO_FILE), info)
        if os.path.exists(export_dir):  # two renames: E is without a model only in between
            os.replace(export_dir, replaced)
        try:
            os.replace(staging, export_dir)
        except OSError:
            if os.path.exists(replaced):  # put the earlier export back
                os.replace(replaced, export_dir)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
    logging.info(
        "Exported %s (%s checkpoint, step %d) to %s.",
        workdir,
        predictor.checkpoint,
        predictor.step,
        export_dir,
    )
    return {
        "SavedModel": os.path.join(export_dir, info["saved_model"]),
        "jax.export": os.path.join(export_dir, JAX_EXPORT_FILE),
        "model info": os.path.join(export_dir, INFO_FILE),
    }


def _images_spec(image_shape):
    batch = jax.export.symbolic_shape("b")
    return jax.ShapeDtypeStruct((*batch, *image_shape), jnp.uint8)


def _write_jax_export(predictor, directory):
    exported = jax.export.export(jax.jit(predictor.probabilities_fn), platforms=PLATFORMS)(
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), predictor.variables),
        _images_spec(predictor.image_shape),
    )
    with files.atomic_open(os.path.join(directory, JAX_EXPORT_FILE), "wb") as f:
        f.write(exported.serialize())
    with files.atomic_open(os.path.join(directory, JAX_VARIABLES_FILE), "wb") as f:
        f.write(serialization.msgpack_serialize(jax.tree.map(np.asarray, predictor.variables)))


def load_jax_export(export_dir):
    """(predict(uint8 images [N, H, W, C]) -> probabilities [N, K], model_info) of an export.

    Needs JAX and Flax only (no TensorFlow, no imgcls model code). The images must already be
    preprocessed as model_info['preprocessing'] says.
    """
    with open(os.path.join(export_dir, INFO_FILE)) as f:
        info = json.load(f)
    with open(os.path.join(export_dir, info["jax_export"]), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    with open(os.path.join(export_dir, info["jax_variables"]), "rb") as f:
        variables = serialization.msgpack_restore(f.read())

    def predict(images):
        return exported.call(variables, jnp.asarray(images, jnp.uint8))

    return predict, info


def _write_saved_model_or_say_why(predictor, directory, shown):
    """_write_saved_model; TensorFlow's error of a write that failed (a full disk: an 86-line
    traceback ending in ResourceExhaustedError [Op:SaveV2]) becomes a WriteError naming the
    folder (`shown`: where it was to be moved) and the cause."""
    from imgcls.data._tf import tf  # (as _write_saved_model)

    try:
        _write_saved_model(predictor, directory)
    except tf.errors.OpError as e:
        text = e.message.strip().splitlines()[0] if e.message.strip() else type(e).__name__
        cause = re.sub(r"\s*\[Op:\w+\]$", "", text.rsplit(";", 1)[-1].strip())
        full = "No space left on device" in text
        error = OSError(errno.ENOSPC if full else errno.EIO, cause)
        raise files.WriteError.of(error, shown) from None


def _write_saved_model(predictor, directory):
    """The SavedModel of `predictor` in `directory`; see the module docstring."""
    # Here, not at the top: TensorFlow, which load_jax_export's users need not have.
    from jax.experimental import jax2tf

    from imgcls.data import preprocess
    from imgcls.data._tf import tf

    height, width, channels = predictor.image_shape
    config = predictor.config
    probabilities = jax2tf.convert(
        predictor.probabilities_fn,
        polymorphic_shapes=[None, f"(b, {height}, {width}, {channels})"],
        with_gradient=False,
        native_serialization_platforms=PLATFORMS,
    )
    module = tf.Module()
    module.model_variables = tf.nest.map_structure(
        lambda a: tf.Variable(np.asarray(a), trainable=False), predictor.variables
    )
    class_names = tf.constant(list(predictor.class_names))
    image_spec = tf.TensorSpec(predictor.image_shape, tf.uint8)

    def decode(data):
        return preprocess.preprocess_encoded(
            data,
            int(config.dataset.image_size),
            float(config.dataset.crop_fraction),
            predictor.image_shape,
        )

    @tf.function(
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")],
        autograph=False,
    )
    def predict_images(images):
        return {"probabilities": probabilities(module.model_variables, images)}

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False
    )
    def serving_default(image_bytes):
        images = tf.map_fn(decode, image_bytes, fn_output_signature=image_spec)
        probs = probabilities(module.model_variables, images)
        top = tf.argmax(probs, axis=-1)
        return {
            "probabilities": probs,
            "class_names": tf.tile(class_names[None], [tf.shape(probs)[0], 1]),
            "top_class": tf.gather(class_names, top),
            "top_probability": tf.reduce_max(probs, axis=-1),
        }

    module.predict_images = predict_images
    module.serving_default = serving_default
    tf.saved_model.save(
        module,
        directory,
        signatures={"serving_default": serving_default, "predict_images": predict_images},
    )


def format_summary(paths: dict) -> str:
    """The console summary of export_model's result: what was written where."""
    return "\n".join(f"{what}: {path}" for what, path in paths.items())
