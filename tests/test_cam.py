"""Tests for imgcls.evaluation.grad_cam: Grad-CAM points at the evidence a trained model uses."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from imgcls.evaluation.grad_cam import cam_argmax, grad_cam
from imgcls.models import create_model

SIZE = 32
PATCH = 8
# Top-left corner of the bright patch of each class: the class is decided by where it is.
CORNERS = {0: (2, 2), 1: (20, 20)}
MARGIN = 2  # the CNN's feature map is 8x8 (4 pixels per cell), upsampled bilinearly


def make_images(present, seed):
    """Low-amplitude noise images with a bright 8x8 patch at CORNERS[c] where present[:, c]."""
    rng = np.random.default_rng(seed)
    images = 0.1 * rng.standard_normal((len(present), SIZE, SIZE, 1)).astype(np.float32)
    for image, flags in zip(images, present, strict=True):
        for label in np.flatnonzero(flags):
            row, col = CORNERS[int(label)]
            image[row : row + PATCH, col : col + PATCH] += 1.0
    return images


def make_dataset(n, seed):
    """The 2-class task: one patch per image, its position is the class."""
    labels = np.random.default_rng(seed).integers(0, 2, n).astype(np.int32)
    return make_images(np.eye(2, dtype=bool)[labels], seed + 1), labels


def inside_patch(point, label):
    row, col = CORNERS[int(label)]
    return (row - MARGIN <= point[0] < row + PATCH + MARGIN) and (
        col - MARGIN <= point[1] < col + PATCH + MARGIN
    )


@pytest.fixture(scope="module")
def trained_cnn():
    """A CNN whose class-c logit is evidence for a patch at CORNERS[c].

    Trained with one sigmoid per class on images with one patch or both, by SGD with momentum.
    With a softmax on one-patch images only, "patch at CORNERS[0]" and "no patch at CORNERS[1]"
    are the same feature, so a logit may score the absence of the other patch; and Adam moves
    every weight of the flatten head at the same rate, so the constant background activations
    come to carry much of each output's bias. Grad-CAM, whose channel weights are spatial means
    of the gradient, then rightly shows an all-negative (zeroed) or background-dominated map.
    Measured over seeds: one-patch softmax with Adam missed on 4 of 8, either change alone on
    about 1 in 8, both together on none of 32.
    """
    model = create_model(
        {"name": "cnn", "features": (16, 32), "dense_features": 32, "dropout_rate": 0.0}, 2
    )
    rng = np.random.default_rng(0)
    present = np.array([[1, 0], [0, 1], [1, 1]], np.float32)[rng.integers(0, 3, 1024)]
    images = make_images(present.astype(bool), seed=1)
    params = model.init(jax.random.key(0), images[:1], train=False)["params"]
    tx = optax.sgd(0.05, momentum=0.9)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply({"params": p}, x, train=False)
            return optax.sigmoid_binary_cross_entropy(logits, y).mean(), logits

        (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        accuracy = jnp.mean((logits > 0) == (y > 0.5))
        return optax.apply_updates(params, updates), opt_state, accuracy

    opt_state = tx.init(params)
    accuracies = []
    for i in range(100):
        batch = slice((i * 64) % len(images), (i * 64) % len(images) + 64)
        params, opt_state, accuracy = step(params, opt_state, images[batch], present[batch])
        accuracies.append(float(accuracy))
    assert np.mean(accuracies[-10:]) == 1.0
    return model, {"params": params}


def test_grad_cam_localises_the_class_evidence(trained_cnn):
    model, variables = trained_cnn
    images, labels = make_dataset(64, seed=1)
    logits = model.apply(variables, images, train=False)
    assert np.mean(np.argmax(logits, -1) == labels) > 0.95

    cams = grad_cam(model, variables, images, labels)
    assert cams.shape == (64, SIZE, SIZE)
    assert cams.dtype == np.float32
    assert not np.isnan(cams).any()
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    # Every map with any positive evidence peaks at exactly 1 after normalisation.
    peaks = cams.max(axis=(1, 2))
    np.testing.assert_allclose(peaks[peaks > 0], 1.0, rtol=1e-6)

    maxima = cam_argmax(cams)
    # An all-zero map (no positive evidence) has its "maximum" at (0, 0): it counts as a miss.
    inside = [
        inside_patch(point, label) and peak > 0
        for point, label, peak in zip(maxima, labels, peaks, strict=True)
    ]
    assert np.mean(inside) >= 0.8, f"only {np.mean(inside):.2f} of the CAM maxima on the patch"


def test_grad_cam_of_a_blank_model_is_zero_not_nan():
    model = create_model({"name": "cnn", "features": (4, 8), "dense_features": 8}, 3)
    images = jax.random.normal(jax.random.key(1), (3, 16, 16, 1))
    params = model.init(jax.random.key(0), images, train=False)["params"]
    zeros = {"params": jax.tree.map(jnp.zeros_like, params)}
    cams = grad_cam(model, zeros, images, np.array([0, 1, 2]))
    assert cams.shape == (3, 16, 16) and cams.dtype == np.float32
    np.testing.assert_array_equal(cams, 0.0)


def test_grad_cam_on_resnet():
    model = create_model({"name": "resnet18", "num_filters": 4, "stem": "small"}, 3, axis_name=None)
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    assert "batch_stats" in variables
    classes = np.array([0, 1, 2, 0])
    cams = grad_cam(model, variables, x, classes)
    assert cams.shape == (4, 16, 16) and cams.dtype == np.float32
    assert not np.isnan(cams).any()
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    # Unhashable module (its stage_sizes is a list): the jitted core is reused, same result.
    np.testing.assert_array_equal(grad_cam(model, variables, x, classes), cams)


@pytest.mark.parametrize(
    "config",
    [
        {"name": "cnn", "features": (4, 8), "dense_features": 8},
        {"name": "resnet18", "num_filters": 4, "stem": "small"},
    ],
)
def test_perturbation_hook_is_a_no_op(config):
    overrides = {"axis_name": None} if config["name"] == "resnet18" else {}
    model = create_model(config, 5, **overrides)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    # init creates no batch-shaped 'perturbations' collection that would end up in a TrainState.
    assert "perturbations" not in variables
    plain, state = model.apply(variables, x, train=False, mutable=["intermediates"])
    features = state["intermediates"]["features"][0]
    zero = {"features": jnp.zeros_like(features)}
    perturbed = model.apply({**variables, "perturbations": zero}, x, train=False)
    np.testing.assert_array_equal(plain, perturbed)
    # The perturbation is added to the feature map: cancelling it leaves only the head's biases.
    cancel = {"features": -features}
    logits = model.apply({**variables, "perturbations": cancel}, x, train=False)
    params = variables["params"]
    if config["name"] == "cnn":
        hidden = jax.nn.relu(params["Dense_0"]["bias"])
        expected = hidden @ params["head"]["kernel"] + params["head"]["bias"]
    else:
        expected = params["head"]["bias"]
    np.testing.assert_allclose(logits, np.broadcast_to(expected, logits.shape), atol=1e-6)


def test_cam_argmax_and_input_checks():
    cams = np.zeros((2, 4, 5), np.float32)
    cams[0, 1, 3] = 1.0
    cams[1, 3, 0] = 0.5
    np.testing.assert_array_equal(cam_argmax(cams), [[1, 3], [3, 0]])
    model = create_model({"name": "cnn", "features": (4,), "dense_features": 4}, 2)
    x = jnp.zeros((2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    with pytest.raises(ValueError, match="class_indices"):
        grad_cam(model, variables, x, np.array([0]))
    with pytest.raises(ValueError, match="params"):
        grad_cam(model, {}, x, np.array([0, 1]))
