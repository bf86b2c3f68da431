"""The augmentation policies' tables: which ops, at which magnitudes, with which probabilities.

RandAugment (Cubuk et al. 2020), TrivialAugment-Wide (Mueller & Hutter 2021) and AutoAugment's
ImageNet policy (Cubuk et al. 2019) as torchvision.transforms defines them (v0.15: the same op
spaces, magnitude bins and sub-policies), so recipes quoted with torchvision's settings carry
over. Pure data and numpy, no TensorFlow: the augmentation table (and so imgcls.config.check)
validates config.augment.policy with it on machines without TensorFlow. The ops themselves are
imgcls.data.augment.autoaugment's.
"""

import numpy as np

POLICIES = ("none", "randaugment", "trivialaugment_wide", "autoaugment_imagenet")
RANDAUGMENT_BINS = 31  # torchvision's num_magnitude_bins for RandAugment and TrivialAugment
AUTOAUGMENT_BINS = 10  # AutoAugment's magnitude levels 0-9

# Every op the policies use, in the order the op index refers to. RandAugment and TrivialAugment
# choose uniformly among all but the last ('invert' is AutoAugment's only).
OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
    "invert",
)
UNIFORM_OPS = len(OPS) - 1  # the ops RandAugment and TrivialAugment draw from
SIGNED = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate") + (
    "brightness",
    "color",
    "contrast",
    "sharpness",
)  # a random sign (+ or -, each with probability 0.5) goes with these ops' magnitudes
# Translations of RandAugment and AutoAugment are fractions of the image side (150/331 at the
# top bin, from AutoAugment's 331-pixel ImageNet crops); TrivialAugment-Wide's are pixels.
RELATIVE_TRANSLATION = 150.0 / 331.0

# (op, probability, magnitude level or None) pairs: AutoAugment's 25 ImageNet sub-policies.
AUTOAUGMENT_IMAGENET = (
    (("posterize", 0.4, 8), ("rotate", 0.6, 9)),
    (("solarize", 0.6, 5), ("autocontrast", 0.6, None)),
    (("equalize", 0.8, None), ("equalize", 0.6, None)),
    (("posterize", 0.6, 7), ("posterize", 0.6, 6)),
    (("equalize", 0.4, None), ("solarize", 0.2, 4)),
    (("equalize", 0.4, None), ("rotate", 0.8, 8)),
    (("solarize", 0.6, 3), ("equalize", 0.6, None)),
    (("posterize", 0.8, 5), ("equalize", 1.0, None)),
    (("rotate", 0.2, 3), ("solarize", 0.6, 8)),
    (("equalize", 0.6, None), ("posterize", 0.4, 6)),
    (("rotate", 0.8, 8), ("color", 0.4, 0)),
    (("rotate", 0.4, 9), ("equalize", 0.6, None)),
    (("equalize", 0.0, None), ("equalize", 0.8, None)),
    (("invert", 0.6, None), ("equalize", 1.0, None)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("rotate", 0.8, 8), ("color", 1.0, 2)),
    (("color", 0.8, 8), ("solarize", 0.8, 7)),
    (("sharpness", 0.4, 7), ("invert", 0.6, None)),
    (("shear_x", 0.6, 5), ("equalize", 1.0, None)),
    (("color", 0.4, 0), ("equalize", 0.6, None)),
    (("equalize", 0.4, None), ("solarize", 0.2, 4)),
    (("solarize", 0.6, 5), ("autocontrast", 0.6, None)),
    (("invert", 0.6, None), ("equalize", 1.0, None)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("equalize", 0.8, None), ("equalize", 0.6, None)),
)


def _posterize_bits(bins: int, fewest_bits: int) -> np.ndarray:
    """8 bits at level 0 down to `fewest_bits` at the top level, rounded (torchvision)."""
    return 8 - np.round(np.arange(bins) / ((bins - 1) / (8 - fewest_bits)))


def magnitudes(bins: int, wide: bool = False) -> np.ndarray:
    """float32 [len(OPS), bins]: each op's magnitude at each level, before the sign.

    Units: shears as the shear factor, translations as a fraction of the image side (or pixels
    when wide), rotations in degrees, enhancements as the change of the factor (1 + m),
    posterize as the bits kept, solarize as the threshold; 0 for ops without a magnitude.
    The standard space is RandAugment's and AutoAugment's; `wide` is TrivialAugment-Wide's.
    """
    ramp = np.linspace(0.0, 1.0, bins)
    table = {
        "shear_x": ramp * (0.99 if wide else 0.3),
        "shear_y": ramp * (0.99 if wide else 0.3),
        "translate_x": ramp * (32.0 if wide else RELATIVE_TRANSLATION),
        "translate_y": ramp * (32.0 if wide else RELATIVE_TRANSLATION),
        "rotate": ramp * (135.0 if wide else 30.0),
        "posterize": _posterize_bits(bins, 2 if wide else 4),
        "solarize": np.linspace(255.0, 0.0, bins),
    }
    for name in ("brightness", "color", "contrast", "sharpness"):
        table[name] = ramp * (0.99 if wide else 0.9)
    return np.stack([table.get(name, np.zeros(bins)) for name in OPS]).astype(np.float32)


def autoaugment_tables():
    """AUTOAUGMENT_IMAGENET as arrays [25, 2]: op index, probability, magnitude level (0 for
    ops without one)."""
    ops = np.array([[OPS.index(op) for op, _, _ in pair] for pair in AUTOAUGMENT_IMAGENET])
    probs = np.array([[p for _, p, _ in pair] for pair in AUTOAUGMENT_IMAGENET], np.float32)
    levels = np.array([[m or 0 for _, _, m in pair] for pair in AUTOAUGMENT_IMAGENET])
    return ops.astype(np.int32), probs, levels.astype(np.int32)
