"""Training-split augmentations of one uint8 image in TensorFlow, keyed by a stateless seed."""

from imgcls.data._tf import tf


def augment_image(image, key, aug):
    """Applies the flips of config.augment `aug` (the rest of the suite comes next)."""
    hflip_key, vflip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    if aug.horizontal_flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=hflip_key)
    if aug.vertical_flip:
        image = tf.image.stateless_random_flip_up_down(image, seed=vflip_key)
    return image
