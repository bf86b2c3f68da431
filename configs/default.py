"""The embedded default: a small CNN on the scikit-learn digits (8x8 grayscale, 10 classes).

Command:  python main.py --config=configs/default.py --workdir=runs/default   (or `make train`)
Hardware: 2 CPU cores (x86-64), JAX 0.10.2 CPU backend.
Result:   0.9887 test accuracy (351/355), test loss 0.026, in 17 s wall for `make train` after
          installation (880 steps, dataset preparation included); seeds 0-3 give
          0.9887 / 0.9915 / 0.9944 / 0.9887.

The other configs import this one and change a few fields (as flax/examples/imagenet does),
so every key that any config uses exists here with its default.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "digits"  # 'digits', 'synthetic', or any TFDS catalog name
    config.dataset.data_dir = ""  # TFDS data_dir; '' means TFDS's default (~/tensorflow_datasets)
    config.dataset.train_split = "train"
    config.dataset.eval_split = "test"
    config.dataset.image_size = 0  # resize to image_size x image_size; 0 keeps the native size
    config.dataset.shuffle_buffer_size = 2048
    config.dataset.cache = True  # cache decoded examples in memory (small datasets only)
    config.dataset.random_crop_padding = 1  # pad by this many pixels, then crop back (0: off)
    config.dataset.random_flip = False  # random horizontal flip
    config.dataset.inception_crop = False  # random-resized crop (ImageNet-style training)
    config.dataset.mean = (0.5,)  # per-channel, in [0, 1] units; applied on device
    config.dataset.std = (0.5,)
    # Only read when name == 'synthetic'.
    config.dataset.num_classes = 10
    config.dataset.image_shape = (32, 32, 3)
    config.dataset.num_train_examples = 1024
    config.dataset.num_eval_examples = 256

    config.model = ml_collections.ConfigDict()
    config.model.name = "cnn"  # see imgcls.models.MODELS
    config.model.features = (32, 64)
    config.model.dense_features = 128
    config.model.dropout_rate = 0.3
    config.half_precision = False  # bfloat16 compute, float32 parameters

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"  # 'sgd' or 'adamw'
    config.optimizer.learning_rate = 3e-3  # peak learning rate
    config.optimizer.momentum = 0.9  # sgd
    config.optimizer.nesterov = True  # sgd
    config.optimizer.b1 = 0.9  # adamw
    config.optimizer.b2 = 0.999  # adamw
    config.optimizer.weight_decay = 1e-4  # on kernels only (not biases or BatchNorm)
    config.optimizer.schedule = "cosine"  # 'cosine' or 'constant', after linear warmup
    config.optimizer.warmup_epochs = 1.0
    config.label_smoothing = 0.0

    config.batch_size = 64  # global, over all devices and hosts
    config.eval_batch_size = 256
    config.num_epochs = 40.0
    config.num_train_steps = -1  # wins over num_epochs when > 0
    config.eval_every_epochs = 10.0
    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    # At the end of training, evaluate the final state and write W/eval/<split>_<step>/
    # (metrics.json, predictions.npz, report.md and figures), as `--mode=eval` does.
    config.final_report = True
    return config
