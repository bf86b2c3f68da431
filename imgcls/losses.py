"""Softmax cross-entropy, shared by the train step and the eval step."""

import jax
import optax


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy against (optionally smoothed) integer labels."""
    return soft_cross_entropy(logits, jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)


def soft_cross_entropy(logits, targets, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy against target distributions (one-hot or mixed)."""
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)
