"""The augmentation table: one row per config.augment key, the one place that says
what switches the key off, which values are valid, and which input pipelines implement it.

Pipelines: TF, the tf.data pipeline on the host (imgcls.data.preprocess, tf_ops, autoaugment);
DEVICE, the device-resident pipeline (jax_ops, imgcls.data.pipelines.device); STEP, inside the
train step, so with either pipeline (mixup and cutmix). A row whose `off` is None is a setting
of another row (`of`), with no effect alone. Everything that needs to know reads the table:
the config check (the rules, before any work), 'auto''s choice of pipeline
(imgcls.data.pipelines.choice), each pipeline's refusal of what it does not implement (the
messages below), and the ops themselves (`check`). tests/test_augment_table.py fails for a
config.augment key without a row, and for a row whose pipelines leave the images unchanged.
"""

import dataclasses
from typing import Any

from imgcls.data.augment.policies import POLICIES, RANDAUGMENT_BINS
from imgcls.values import (
    FRACTION,
    NON_NEGATIVE,
    OPEN_FRACTION,
    POSITIVE_COUNT,
    at_least,
    boolean,
    is_int,
    is_number,
    one_of,
    within,
)

TF, DEVICE, STEP = "tf", "device", "step"
PIPELINE_NAMES = {TF: "the tf.data input pipeline", DEVICE: "the device input pipeline"}


def _area_range(value):
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(map(is_number, value))
        and 0 < value[0] <= value[1] <= 1
    )


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One config.augment key."""

    key: str
    off: Any  # the value that switches it off; None: a setting of `of`
    rule: tuple  # (check(value) -> bool, what is valid)
    pipelines: tuple[str, ...] = ()  # the pipelines that implement it (TF, DEVICE, STEP)
    of: str = ""  # the row this key is a setting of
    native_size_only: tuple[str, ...] = ()  # pipelines that do it only at image_size 0
    rgb_only: bool = False  # needs 3 channels (HSV)
    example: Any = None  # a value that switches it on (tests apply it)


ROWS = {
    row.key: row
    for row in (
        # Inception-style crop, resized to image_size (the device pipeline holds the decoded
        # images at the model's size, so there it crops only at the native size).
        Augmentation(
            "random_resized_crop",
            False,
            boolean(),
            (TF, DEVICE),
            example=True,
            native_size_only=(DEVICE,),
        ),
        Augmentation(
            "area_range",
            None,
            (_area_range, "must be 2 numbers with 0 < low <= high <= 1"),
            of="random_resized_crop",
            example=(0.25, 0.5),
        ),
        Augmentation("random_crop_padding", 0, at_least(0, integer=True), (TF, DEVICE), example=2),
        Augmentation(
            "crop_padding_mode",
            None,
            one_of(("constant", "reflect")),
            of="random_crop_padding",
            example="reflect",
        ),
        Augmentation("horizontal_flip", False, boolean(), (TF, DEVICE), example=True),
        Augmentation("vertical_flip", False, boolean(), (TF, DEVICE), example=True),
        Augmentation("rotation", 0.0, within(0, 180), (TF,), example=30.0),
        Augmentation("zoom", 0.0, OPEN_FRACTION, (TF,), example=0.3),
        Augmentation("translation", 0.0, OPEN_FRACTION, (TF,), example=0.2),
        Augmentation("brightness", 0.0, FRACTION, (TF,), example=0.4),
        Augmentation("contrast", 0.0, FRACTION, (TF,), example=0.5),
        Augmentation("saturation", 0.0, FRACTION, (TF,), rgb_only=True, example=0.5),
        Augmentation("hue", 0.0, within(0, 0.5), (TF,), rgb_only=True, example=0.2),
        # airbench: every image mirrored in alternate epochs (the device pipeline knows each
        # example's identity and epoch); cutout of a mean-filled square.
        Augmentation("alternating_flip", False, boolean(), (DEVICE,), example=True),
        Augmentation("cutout", 0, at_least(0, integer=True), (DEVICE,), example=3),
        Augmentation("erasing", 0.0, FRACTION, (TF, DEVICE), example=1.0),
        Augmentation("mixup", 0.0, NON_NEGATIVE, (STEP,), example=1.0),
        Augmentation("cutmix", 0.0, NON_NEGATIVE, (STEP,), example=1.0),
        Augmentation("policy", "none", one_of(POLICIES), (TF,), example="randaugment"),
        Augmentation("randaugment_num_ops", None, POSITIVE_COUNT, of="policy", example=3),
        Augmentation(
            "randaugment_magnitude",
            None,
            (
                lambda v: is_int(v) and 0 <= v < RANDAUGMENT_BINS,
                f"must be an integer in [0, {RANDAUGMENT_BINS - 1}]",
            ),
            of="policy",
            example=20,
        ),
    )
}


def switched_on(aug) -> list[str]:
    """The keys of config.augment `aug` that switch an augmentation on, in table order."""
    return [key for key, row in ROWS.items() if row.off is not None and aug[key] != row.off]


def implements(row: Augmentation, pipeline: str, native_size: bool = False) -> bool:
    """Whether `pipeline` (TF or DEVICE) does `row`'s augmentation; native_size: the images
    keep their native size (config.dataset.image_size 0)."""
    if STEP in row.pipelines:
        return True
    if pipeline in row.native_size_only and not native_size:
        return False
    return pipeline in row.pipelines


def unsupported(aug, pipeline: str, native_size: bool = False) -> list[str]:
    """The keys switched on in `aug` that `pipeline` does not implement."""
    return [key for key in switched_on(aug) if not implements(ROWS[key], pipeline, native_size)]


def implemented_by(pipeline: str) -> str:
    """What `pipeline` does, for messages: 'random_crop_padding, horizontal_flip, ... and
    random_resized_crop at the native size'."""
    rows = [r for r in ROWS.values() if pipeline in r.pipelines and r.off is not None]
    anywhere = [r.key for r in rows if pipeline not in r.native_size_only]
    native = [f"{r.key} at the native size" for r in rows if pipeline in r.native_size_only]
    return ", ".join(anywhere + native)


def check_implemented(aug, pipeline: str, native_size: bool = False) -> None:
    """ValueError when `aug` switches on what `pipeline` does not implement: it names the keys,
    what the pipeline does, and the fix (called before the pipeline loads any data)."""
    keys = unsupported(aug, pipeline, native_size)
    if not keys:
        return
    other = DEVICE if pipeline == TF else TF
    given = ", ".join(f"config.augment.{key}={aug[key]!r}" for key in keys)
    these, them = ("these", "them") if len(keys) > 1 else ("this", "it")
    raise ValueError(
        f"{given}: only {PIPELINE_NAMES[other]} implements {these} ({PIPELINE_NAMES[pipeline]} "
        f"does {implemented_by(pipeline)}). Set config.dataset.pipeline='{other}' (or 'auto') or "
        f"switch {them} off."
    )


def problems(aug, channels: int | None = None) -> list[str]:
    """One line per value of `aug` that its row's rule rejects; with `channels` 1, the RGB-only
    augmentations switched on."""
    found = [
        f"config.augment.{key}={aug[key]!r} {row.rule[1]}."
        for key, row in ROWS.items()
        if key in aug and not row.rule[0](aug[key])
    ]
    rgb = [key for key in switched_on(aug) if ROWS[key].rgb_only]
    if rgb and channels == 1:
        keys = ", ".join(f"config.augment.{key}" for key in rgb)
        found.append(
            f"{keys} need RGB images, but the images have 1 channel; switch them off or set "
            "config.dataset.channels = 3."
        )
    return found


def check(aug, channels: int | None = None) -> None:
    """ValueError with the first of `problems`: the ops call it before they are traced."""
    found = problems(aug, channels)
    if found:
        raise ValueError(found[0])
