"""ResNet-18 (small-image stem) on CIFAR-10 from TFDS, SGD + Nesterov, cosine schedule.

Command:  python main.py --config=configs/cifar10_resnet18.py --workdir=runs/cifar10_resnet18
          (CIFAR-10 is downloaded by TFDS into config.dataset.data_dir on first use)
Hardware: not yet measured end to end (step alone on one H200: 81,585 images/s in bfloat16,
          41,009 in float32 at batch 512; see benchmarks/results.md).
Result:   not yet measured (this recipe typically reaches ~95% test accuracy).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "cifar10"
    config.dataset.shuffle_buffer_size = 50_000
    config.augment.random_crop_padding = 4
    config.augment.horizontal_flip = True
    config.dataset.mean = (0.4914, 0.4822, 0.4465)
    config.dataset.std = (0.2470, 0.2435, 0.2616)

    config.model = default.ml_collections.ConfigDict()
    config.model.name = "resnet18"
    config.model.stem = "small"  # 3x3 conv, no max-pool: for 32x32 inputs
    config.model.num_filters = 64

    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.weight_decay = 5e-4
    config.optimizer.warmup_epochs = 2.0

    config.batch_size = 128
    config.eval_batch_size = 1000
    config.num_epochs = 100.0
    config.eval_every_epochs = 5.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    return config
