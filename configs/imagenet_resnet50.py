"""ResNet-50 v1.5 on ImageNet (TFDS imagenet2012), the flax/examples/imagenet recipe.

Command:  python main.py --config=configs/imagenet_resnet50.py --workdir=runs/imagenet_resnet50
          (imagenet2012 needs a manual download into <data_dir>/downloads/manual: see README)
Hardware: not yet measured.
Result:   not yet measured (this recipe typically reaches ~76% top-1 in 100 epochs).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "imagenet2012"
    config.dataset.eval_split = "validation"
    config.dataset.image_size = 224
    config.augment.random_resized_crop = True  # center crop for eval
    config.augment.horizontal_flip = True
    config.dataset.cache = False
    config.dataset.shuffle_buffer_size = 16 * 1024
    config.dataset.mean = (0.485, 0.456, 0.406)
    config.dataset.std = (0.229, 0.224, 0.225)

    config.model = default.ml_collections.ConfigDict()
    config.model.name = "resnet50"
    config.half_precision = True

    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1 * 1024 / 256  # linear scaling from 0.1 at batch 256
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_epochs = 5.0
    config.label_smoothing = 0.1

    config.batch_size = 1024
    config.eval_batch_size = 1000
    config.num_epochs = 100.0
    config.eval_every_epochs = 1.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    config.keep_checkpoints = 3
    return config
