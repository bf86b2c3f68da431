"""Class balance: one weight per class, for the weighted loss and both balanced samplers."""

import numpy as np

BALANCE_MODES = ("none", "loss", "sampling")


def check_balance(config) -> str:
    """config.dataset.balance, checked."""
    balance = config.dataset.balance
    if balance not in BALANCE_MODES:
        raise ValueError(
            f"config.dataset.balance='{balance}' is not 'none', 'loss' or 'sampling': e.g. "
            "--config.dataset.balance=loss."
        )
    return balance


def balanced_class_weights(counts):
    """n / (K * n_c) for each class c of the K classes present (0 for an absent class).

    Weighting (or repeating) each example by its class's value makes every class count the
    same while the total stays n: the class-weighted loss and balanced sampling both use it.
    """
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights
