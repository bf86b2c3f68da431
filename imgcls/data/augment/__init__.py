"""Training augmentations: table.py (one row per config.augment key: its off value, its rule,
the pipelines that implement it), tf_ops.py (the tf.data ops), jax_ops.py (the device pipeline's
and the train step's ops, TF-free), autoaugment.py and policies.py (RandAugment, TrivialAugment,
AutoAugment: the ops and their tables).
"""
