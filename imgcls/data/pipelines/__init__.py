"""Input pipelines: tf_data.py (tf.data on the host, exact resume), device.py (the training split
resident on the accelerators, augmented in JAX) and choice.py (config.dataset.pipeline='auto'
between them). imgcls.data's functions pick one; TensorFlow is imported by tf_data.py only.
"""
