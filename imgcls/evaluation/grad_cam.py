"""Grad-CAM (Selvaraju et al. 2017): where in the image a model finds evidence for a class.

A trained classifier can be right for the wrong reason (a watermark, the background, a border);
accuracy alone does not show it, a class-activation map does. Grad-CAM needs no change to the
architecture and works for every model here: the model contract's hook
(imgcls.models.contract.feature_map) adds a zero-valued 'perturbations/features' variable to the
last spatial feature map A (`Module.perturb`, a no-op unless that collection is passed) and sows
A as 'intermediates/features'. The gradient of the class score with respect to
the perturbation is the gradient with respect to A, so one forward and one backward pass give

    weights[n, k] = mean over (i, j) of d logit[n, c_n] / d A[n, i, j, k]
    cam[n] = relu(sum_k weights[n, k] * A[n, :, :, k])

which is upsampled bilinearly to the input size and scaled to [0, 1] per image. The model runs
in eval mode (BatchNorm running averages, no dropout), as at inference.

The map shows positive evidence for the logit as the model computes it. Because the channel
weights are spatial means, a flatten head (the CNN) whose logit is driven by *where* a feature
is rather than *which* feature it is, or a logit that scores the absence of another class's
evidence, can give a zero or background-dominated map; tests/test_cam.py shows a setup where it
localises reliably. The core is jitted per module (by equality for hashable modules, by identity
otherwise, e.g. the ResNets, whose `stage_sizes` is a list).
"""

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from imgcls.data.normalize import mean_std, normalize
from imgcls.evaluation import report
from imgcls.models import contract

__all__ = ["cam_argmax", "grad_cam", "plot_cam", "report_figure"]

FEATURES = contract.FEATURES
# Only these collections are passed to the model; anything else in `variables` is ignored.
_INPUT_COLLECTIONS = contract.VARIABLES
REPORT_EXAMPLES = 4  # correct and wrong examples explained in a report's cam.png (each)
_CAMS_PER_ROW = 4  # CAM examples (image + overlay) per row


class _StaticModel:
    """Makes a module a static jit argument: equal (hashable) modules share one compilation;
    unhashable ones (e.g. a ResNet, whose `stage_sizes` is a list) are keyed by identity."""

    __slots__ = ("model", "_hashable")

    def __init__(self, model):
        self.model = model
        try:
            hash(model)
            self._hashable = True
        except TypeError:
            self._hashable = False

    def __hash__(self):
        return hash(self.model) if self._hashable else id(self.model)

    def __eq__(self, other):
        if not isinstance(other, _StaticModel):
            return NotImplemented
        if self._hashable and other._hashable:
            return type(self.model) is type(other.model) and self.model == other.model
        return self.model is other.model


def _class_score_and_features(static, variables, perturbations, images, class_indices):
    logits, state = static.model.apply(
        {**variables, contract.PERTURBATIONS: perturbations},
        images,
        train=False,
        mutable=[contract.INTERMEDIATES],
    )
    score = jnp.take_along_axis(logits, class_indices[:, None], axis=1).sum()
    return score, state[contract.INTERMEDIATES][FEATURES][0]


@functools.partial(jax.jit, static_argnums=0)
def _grad_cam(static, variables, images, class_indices):
    model = static.model
    # Zero perturbations shaped like the feature map: the model creates them when the collection
    # is mutable (only their shapes are used, so XLA drops this forward pass).
    _, state = model.apply(variables, images, train=False, mutable=[contract.PERTURBATIONS])
    perturbations = jax.tree.map(jnp.zeros_like, state[contract.PERTURBATIONS])
    grads, features = jax.grad(_class_score_and_features, argnums=2, has_aux=True)(
        static, variables, perturbations, images, class_indices
    )
    grads = grads[FEATURES].astype(jnp.float32)
    features = features.astype(jnp.float32)
    weights = jnp.mean(grads, axis=(1, 2))  # [N, K]
    cam = jax.nn.relu(jnp.einsum("nhwk,nk->nhw", features, weights))
    n, height, width = images.shape[:3]
    cam = jax.image.resize(cam, (n, height, width), method="bilinear")
    cam = jnp.maximum(cam, 0.0)  # bilinear weights are non-negative; guards rounding only
    peak = jnp.max(cam, axis=(1, 2), keepdims=True)
    return jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)


def grad_cam(model, variables: Mapping[str, Any], images, class_indices) -> np.ndarray:
    """Grad-CAM maps of `class_indices` for `images`, as float32 numpy [N, H, W] in [0, 1].

    Args:
      model: an imgcls Flax module (its last spatial feature map goes through
        imgcls.models.contract.feature_map, as the model contract says).
      variables: {'params': ..., 'batch_stats': ...} ('batch_stats' optional); other
        collections are ignored.
      images: float32 [N, H, W, C], normalised as the model's inputs.
      class_indices: int [N], the class to explain for each image.

    Each map is divided by its maximum; an image with no positive evidence gets an all-zero map.
    """
    images = jnp.asarray(images, jnp.float32)
    class_indices = jnp.asarray(class_indices, jnp.int32)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}.")
    if class_indices.shape != images.shape[:1]:
        raise ValueError(
            f"class_indices must have shape [N] = {images.shape[:1]}, got {class_indices.shape}."
        )
    inputs = {k: variables[k] for k in _INPUT_COLLECTIONS if k in variables and variables[k]}
    if "params" not in inputs:
        raise ValueError("variables must contain 'params'.")
    mutable = [contract.INTERMEDIATES, contract.PERTURBATIONS]
    probe = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, mutable=mutable), inputs, images[:1]
    )[1]
    if any(FEATURES not in probe.get(collection, {}) for collection in mutable):
        raise ValueError(
            f"{type(model).__name__} does not expose its feature map to Grad-CAM: its last "
            "spatial feature map must go through imgcls.models.contract.feature_map(self, x)."
        )
    cams = _grad_cam(_StaticModel(model), inputs, images, class_indices)
    return np.asarray(cams, np.float32)


def cam_argmax(cams) -> np.ndarray:
    """(row, column) of each map's maximum, as int [N, 2] (the first one on ties)."""
    cams = np.asarray(cams)
    n, _, width = cams.shape
    flat = np.argmax(cams.reshape(n, -1), axis=1)
    return np.stack([flat // width, flat % width], axis=1)


def plot_cam(images, cams, titles, path) -> None:
    """Each image next to itself overlaid with its class activation map (jet, semi-transparent)."""
    images, cams = np.asarray(images), np.asarray(cams, dtype=np.float32)
    if cams.shape != images.shape[:3] or len(titles) != len(images):
        raise ValueError(
            f"plot_cam needs images [N, H, W, C], cams [N, H, W] and N titles; got images "
            f"{images.shape}, cams {cams.shape} and {len(titles)} titles."
        )
    n = len(images)
    per_row = max(1, min(n, _CAMS_PER_ROW))
    rows = max(1, math.ceil(n / per_row))
    fig = Figure(figsize=(4 * per_row, 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, 2 * per_row, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for k in range(n):
        image = images[k][..., 0] if images.shape[-1] == 1 else images[k]
        gray = dict(cmap="gray", vmin=0, vmax=255) if images.shape[-1] == 1 else {}
        plain, overlay = axes[2 * k], axes[2 * k + 1]
        plain.imshow(image, interpolation="nearest", **gray)
        plain.set_title(titles[k], fontsize=9)
        overlay.imshow(image, interpolation="nearest", **gray)
        overlay.imshow(cams[k], cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
        overlay.set_title("CAM", fontsize=9)
    if n == 0:
        fig.text(0.5, 0.5, "none", ha="center", va="center", color="gray")
    report.save_figure(fig, path)


def report_figure(config, model, info, variables, examples, path) -> bool:
    """An evaluation report's cam.png: Grad-CAM of the predicted class for the first
    REPORT_EXAMPLES correct and most confidently wrong `examples` (evaluate.py keeps them).
    False (and no file) when there are none."""
    chosen = examples.correct[:REPORT_EXAMPLES] + examples.wrong[:REPORT_EXAMPLES]
    if not chosen:
        return False
    images = np.stack([e.image for e in chosen])
    variables = jax.tree.map(np.asarray, variables)
    inputs = np.asarray(normalize(images, *mean_std(config)))
    predicted = np.array([e.predicted for e in chosen])
    cams = grad_cam(model, variables, inputs, predicted)
    names = info.class_names
    titles = [
        f"{'correct' if e.label == e.predicted else 'wrong'}: true {names[e.label]}, "
        f"pred {names[e.predicted]} ({e.confidence:.2f})"
        for e in chosen
    ]
    plot_cam(images, cams, titles, path)
    return True
