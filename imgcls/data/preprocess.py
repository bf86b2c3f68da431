"""Resizing and augmentation of decoded uint8 examples.

All randomness comes from stateless TF ops keyed by a per-example seed that the pipeline
derives from (config.seed, process, epoch, index within the epoch), so an augmented example
is a pure function of its position in the stream and resuming reproduces it exactly. Images
stay uint8 (rounded and clipped after resizing); normalization happens on device.
"""

from imgcls.data._tf import tf
from imgcls.data.augment import tf_ops

INCEPTION_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)  # random-resized crop: aspect ratio range
INCEPTION_MAX_ATTEMPTS = 10  # then fall back to the whole image


def output_shape(config, image_shape):
    """(H, W, C) of preprocessed images; needs image_size > 0 for variable-size images."""
    size = int(config.dataset.image_size)
    if size > 0:
        return (size, size, image_shape[-1])
    if any(d is None for d in image_shape[:2]):
        raise ValueError(
            f"Dataset '{config.dataset.name}' has images of varying size, so "
            "config.dataset.image_size=0 (the native size) cannot batch them: set a size such "
            "as --config.dataset.image_size=64 (configs/folder_cnn.py's 'auto' picks one)."
        )
    return tuple(int(d) for d in image_shape)


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resize(image, height, width):
    """Bilinear (antialiased) resize of a uint8 image to [height, width], still uint8.

    An image that already has that size is returned as it is (no resampling round trip).
    """
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))

    def resampled():
        return _to_uint8(
            tf.image.resize(tf.cast(image, tf.float32), [height, width], antialias=True)
        )

    return tf.cond(same, lambda: image, resampled)


def random_resized_crop(image, size, key, area_range):
    """Inception-style crop: a random area/aspect-ratio box, resized to size ((H, W) or an int
    for a square)."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([0, 0, 4], tf.float32),
        seed=key,
        min_object_covered=0.0,
        aspect_ratio_range=INCEPTION_ASPECT_RANGE,
        area_range=tuple(area_range),
        max_attempts=INCEPTION_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    height, width = (size, size) if isinstance(size, int) else size
    return resize(tf.slice(image, begin, crop_size), height, width)


def resize_shorter_side(image, size, crop_fraction):
    """Resizes (keeping the aspect ratio) so the shorter side is size / crop_fraction."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = (size / crop_fraction) / tf.minimum(height, width)
    new_height = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), size)
    new_width = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), size)
    return resize(image, new_height, new_width)


def center_crop(image, size, crop_fraction):
    """Resizes the shorter side to size / crop_fraction, then crops the center square."""
    image = resize_shorter_side(image, size, crop_fraction)
    shape = tf.shape(image)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    return image[top : top + size, left : left + size]


def random_crop(image, size, key, crop_fraction):
    """Resizes the shorter side to size / crop_fraction, then crops a random square."""
    image = resize_shorter_side(image, size, crop_fraction)
    return tf.image.stateless_random_crop(image, [size, size, tf.shape(image)[2]], seed=key)


def pad_and_random_crop(image, padding, key, mode="constant"):
    """Pads by `padding` pixels on each side (zeros, or 'reflect': the mirror image of the
    border), then crops back to the original size."""
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]], mode=mode.upper())
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed=key)


def preprocess_train(example, key, config, shape):
    """Resize (random-resized crop or resize + random crop), pad-and-crop, then augment.

    `key` is a [2] int64 seed; the augmentations are those of config.augment. With image_size
    0 (native size), a random-resized crop is resized back to the native (H, W) of `shape`.
    """
    ds, aug = config.dataset, config.augment
    image, size = example["image"], int(ds.image_size)
    resize_key, crop_key, augment_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))
    if size > 0 and aug.random_resized_crop:
        image = random_resized_crop(image, size, resize_key, aug.area_range)
    elif aug.random_resized_crop:  # native size: crop and resize back to it
        image = random_resized_crop(image, shape[:2], resize_key, aug.area_range)
    elif size > 0:
        image = random_crop(image, size, resize_key, float(ds.crop_fraction))
    if aug.random_crop_padding > 0:
        mode = aug.crop_padding_mode
        image = pad_and_random_crop(image, int(aug.random_crop_padding), crop_key, mode)
    image = tf_ops.augment_image(image, augment_key, aug)
    return {"image": tf.ensure_shape(image, shape), "label": example["label"]}


def preprocess_eval(example, config, shape):
    """Deterministic: with image_size > 0, resize the shorter side and crop the center."""
    ds = config.dataset
    image, size = example["image"], int(ds.image_size)
    if size > 0:
        image = center_crop(image, size, float(ds.crop_fraction))
    return {"image": tf.ensure_shape(image, shape), "label": example["label"]}


def decode(data, channels):
    """JPEG, PNG, GIF or BMP bytes -> uint8 [H, W, channels] (a GIF's first frame).

    As TFDS decodes stored images, except that GIF and BMP, whose decoders make no grayscale,
    are decoded as RGB and converted (exactly, for gray pixels).
    """

    def direct():
        return tf.image.decode_image(
            data, channels=channels, dtype=tf.uint8, expand_animations=False
        )

    if channels != 1:
        return direct()

    def via_rgb():
        rgb = tf.image.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return _to_uint8(tf.image.rgb_to_grayscale(tf.cast(rgb, tf.float32)))

    is_gif = tf.equal(tf.strings.substr(data, 0, 3), b"GIF")
    is_bmp = tf.equal(tf.strings.substr(data, 0, 2), b"BM")
    return tf.cond(tf.logical_or(is_gif, is_bmp), via_rgb, direct)


def preprocess_encoded(data, image_size, crop_fraction, shape):
    """Encoded image bytes (JPEG, PNG, GIF, BMP) -> the uint8 image an eval batch would hold.

    Predict, serve and the exported SavedModel all use this, so they see what evaluation sees.
    With image_size > 0 it is preprocess_eval's center crop; a model of native-size images
    (image_size 0) gets other sizes resized to its (H, W).
    """
    image = decode(data, shape[-1])
    if image_size > 0:
        image = center_crop(image, image_size, crop_fraction)
    else:
        image = resize(image, shape[0], shape[1])
    return tf.ensure_shape(image, shape)
