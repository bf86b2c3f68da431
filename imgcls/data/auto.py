"""config.dataset's 'auto' image settings, resolved from what a source recorded of its images.

The image-folder configs set image_size, channels, mean and std to 'auto' (and the split keys,
see imgcls.data.splits). A run resolves them once, before anything is built, and saves the
resolved values in W/config.json, so eval, predict, export and serve read plain values. The
rules, from the statistics an image folder records at preparation (Source.image_statistics):

- image_size: 0 (the native size, no resizing) when every image has the same size and neither
  side exceeds MAX_IMAGE_SIZE (28x28 digits stay 28x28); otherwise the median shorter side
  rounded to a multiple of SIZE_MULTIPLE and clamped to [MIN_IMAGE_SIZE, MAX_IMAGE_SIZE].
- channels: 1 when every image is grayscale, else 3.
- mean / std: per channel, over the pixels of the training split's images (each image weighing
  the same), in [0, 1] units; the split as prepared, so a validation part carved off it counts.

A source that records no statistics resolves image_size and channels from a fixed image shape
and asks for explicit values otherwise. A value given on the command line for a key that is
'auto' in the config arrives as text ('64', '(0.5,)'); imgcls.values reads it. TF-free.
"""

import math

from imgcls.values import is_auto, parse_value

AUTO_KEYS = ("image_size", "channels", "mean", "std")  # of config.dataset
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, SIZE_MULTIPLE = 32, 224, 8
MIN_STD = 1.0 / 255.0  # a constant channel would otherwise divide by zero
DECIMALS = 4  # of the resolved mean and std


def _floats(value, key):
    value = parse_value(value, f"dataset.{key}")
    if isinstance(value, int | float):
        value = (value,)
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        values = ()
    if not values:
        raise ValueError(
            f"config.dataset.{key}={value!r} must be one number per channel or 'auto': e.g. "
            f"--config.dataset.{key}=auto or --config.dataset.{key}='(0.5, 0.5, 0.5)'."
        )
    return values


def _count(n, what):
    return f"{n:,} {what}"


def _unknown(key, name, fix):
    return ValueError(
        f"config.dataset.{key}='auto' needs statistics of the images that dataset '{name}' "
        f"does not record: set {fix}."
    )


def _auto_size(stats):
    """(image_size, why) from the recorded sizes."""
    height, width = stats["height"], stats["width"]
    uniform = height["min"] == height["max"] and width["min"] == width["max"]
    size = f"{height['max']}x{width['max']}"
    if uniform and max(height["max"], width["max"]) <= MAX_IMAGE_SIZE:
        return 0, f"the native size: all {_count(stats['images'], 'images')} are {size}"
    median = stats["shorter_side"]["median"]
    rounded = SIZE_MULTIPLE * math.floor(median / SIZE_MULTIPLE + 0.5)
    chosen = min(max(rounded, MIN_IMAGE_SIZE), MAX_IMAGE_SIZE)
    spread = (
        f"all images are {size}, over {MAX_IMAGE_SIZE}"
        if uniform
        else f"sizes vary (height {height['min']}-{height['max']}, width "
        f"{width['min']}-{width['max']})"
    )
    return chosen, (
        f"{spread}: the median shorter side {median:g} rounded to a multiple of "
        f"{SIZE_MULTIPLE} in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]"
    )


def _image_size(value, stats, image_shape, name):
    value = parse_value(value, "dataset.image_size")
    if not is_auto(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"config.dataset.image_size={value!r} must be a number of pixels >= 0 (0: the "
                "native size) or 'auto': e.g. --config.dataset.image_size=64."
            )
        return value, None
    if stats:
        size, why = _auto_size(stats)
    elif image_shape[0] is not None and image_shape[1] is not None:
        size, why = 0, f"the native size {image_shape[0]}x{image_shape[1]} of '{name}'"
    else:
        raise _unknown("image_size", name, "--config.dataset.image_size=<pixels>, e.g. 64")
    return size, f"image_size: auto -> {size} ({why})"


def _channels(value, stats, image_shape, name):
    value = parse_value(value, "dataset.channels")
    if not is_auto(value):
        return value, None
    if stats:
        color = stats["images"] - stats["grayscale"]
        channels = 3 if color else 1
        why = (
            f"{_count(color, 'of')} {stats['images']:,} images are in colour"
            if color
            else f"all {_count(stats['images'], 'images')} are grayscale"
        )
    elif image_shape[-1] in (1, 3):
        channels, why = image_shape[-1], f"the images of '{name}' have {image_shape[-1]}"
    else:
        raise _unknown("channels", name, "--config.dataset.channels=3 (RGB) or 1 (grayscale)")
    return channels, f"channels: auto -> {channels} ({why})"


def _mean_std(ds, pixels, channels, name):
    auto = [key for key in ("mean", "std") if is_auto(ds[key])]
    values = {key: _floats(ds[key], key) for key in ("mean", "std") if key not in auto}
    if not auto:
        return values, None
    if not pixels:
        example = ", ".join(["0.5"] * channels)
        fix = f"--config.dataset.mean='({example},)' and --config.dataset.std='({example},)'"
        raise _unknown(auto[0], name, f"{fix} (in [0, 1] units)")
    rgb = channels == 3
    found = {
        "mean": pixels["mean_rgb"] if rgb else [pixels["mean_gray"]],
        "std": pixels["std_rgb"] if rgb else [pixels["std_gray"]],
    }
    for key in auto:
        floor = MIN_STD if key == "std" else 0.0
        values[key] = tuple(round(max(float(v), floor), DECIMALS) for v in found[key])
    shown = " and ".join(f"{k} {values[k]}" for k in auto)
    what = f"the {_count(pixels['images'], 'images')} of the training split '{pixels['split']}'"
    return values, f"{'/'.join(auto)}: auto -> {shown} ({what}, {channels} channel(s))"


def resolve_images(config, stats, image_shape, name):
    """(config with image_size, channels, mean and std resolved, notes for the log).

    `stats` is the source's image_statistics of the training split (None when it records
    none), `image_shape` its (H, W, C) with None for what varies or is not known yet. The
    config is changed in place (a resolved copy is expected).
    """
    ds = config.dataset
    size, size_note = _image_size(ds.image_size, stats, image_shape, name)
    channels, channels_note = _channels(ds.channels, stats, image_shape, name)
    pixels = stats.get("pixels") if stats else None
    values, mean_note = _mean_std(ds, pixels, channels, name)
    with ds.ignore_type():
        ds.image_size = size
        ds.channels = channels
        ds.mean, ds.std = values["mean"], values["std"]
    return config, [n for n in (size_note, channels_note, mean_note) if n]
