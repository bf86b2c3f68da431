"""The one place that imports TensorFlow, for the tf.data input pipeline only.

TensorFlow must not claim the GPUs (or their memory) that JAX trains on, so they are hidden from
it as soon as it is imported. Only the pipeline submodules import this module, and
imgcls.data imports those lazily, so models and training run on machines without TensorFlow.
"""

import tensorflow as tf
import tensorflow_datasets as tfds

try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TF was already initialized elsewhere; its device list is fixed.
    pass

AUTOTUNE = tf.data.AUTOTUNE

__all__ = ["AUTOTUNE", "tf", "tfds"]
