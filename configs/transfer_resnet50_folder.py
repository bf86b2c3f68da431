"""Fine-tune Keras' ImageNet ResNet-50 (resnet50_v1) on your own folder of images at 224x224.

Command:  python main.py --config=configs/transfer_resnet50_folder.py \\
              --config.dataset.path=/data/flowers --workdir=runs/flowers_transfer
          init_from='keras' reads the weights Keras caches in ~/.keras/models/, downloading
          them there first (about 100 MB, MD5-checked) when they are not cached; offline, pass the
          file: --config.init_from=keras:/path/to/resnet50_weights_tf_dim_ordering_tf_
          kernels.h5. The split folders are found by their names as in folder_cnn.py.
          Or start from your own run: --config.init_from=runs/other (its best
          checkpoint; the model config must match). The head (new class count) starts fresh.
          The first 3 epochs train only the head (backbone frozen, BatchNorm at its ImageNet
          statistics); then the whole network trains, the backbone at 0.1x the learning rate.
Hardware: the ImageNet-weights run is not yet measured (ResNet-50 at 224 trains ~2 images/s on
          2 CPU cores: it needs a GPU). Measured below: 2 CPU cores (x86-64, shared with another
          job), JAX 0.10.2 CPU backend.
Result:   with ImageNet weights: not yet measured. Measured instead: this config scaled down to
          resnet18 (imagenet stem, num_filters 16) at 64x64 in float32 on
          ../shared/data/flowers5.tar.gz (auto split 3,452 / 439 / 426 photos; 1,070 steps),
          warm-started from the same network trained by us for 2 epochs on the CIFAR-10 JPEG
          folder (0.5932 CIFAR-10 test accuracy, 5m08s wall), against the same run from scratch:
            as configured (frozen 3 epochs, then backbone at 0.1x)  0.5352 test (0.5308 val) 2m12s
            warm start, --config.freeze_backbone=False              0.6761 test (0.6401 val) 2m08s
            from scratch (init_from='', freeze_backbone=False)      0.6009 test (0.5672 val) 1m55s
          So a small, far-off source (CIFAR-10's 32 px photos, upsampled) is better fine-tuned
          whole from the start; freezing first is the usual recipe for strong (ImageNet)
          features, untested here.
          Measured with (<cifar>, <flowers>: the untarred archives of ../shared/data):
            python main.py --config=configs/cifar10_resnet18.py --workdir=runs/cifar_src \
              --config.dataset.name=folder --config.dataset.path=<cifar> \
              --config.dataset.image_size=64 --config.augment.random_crop_padding=0 \
              --config.augment.random_resized_crop=True --config.augment.area_range="(0.35,1.0)" \
              --config.model.stem=imagenet --config.model.num_filters=16 \
              --config.dataset.mean="(0.5,0.5,0.5)" --config.dataset.std="(0.25,0.25,0.25)" \
              --config.num_epochs=2 --config.eval_every_epochs=1 \
              --config.optimizer.warmup_epochs=0.2 --config.final_report=False
            python main.py --config=configs/transfer_resnet50_folder.py --workdir=runs/warm \
              --config.dataset.path=<flowers>/flowers --config.dataset.image_size=64 \
              --config.model.name=resnet18 --config.model.num_filters=16 \
              --config.dataset.mean="(0.5,0.5,0.5)" --config.dataset.std="(0.25,0.25,0.25)" \
              --config.half_precision=False --config.init_from=runs/cifar_src
          and for the other two rows --config.freeze_backbone=False, plus --config.init_from=
          (empty) from scratch.
"""

from configs import default
from imgcls.transfer.keras_import import KERAS_RESNET50_MEAN, KERAS_RESNET50_STD


def get_config():
    config = default.get_config()
    config.dataset.name = "folder"
    with config.ignore_type():  # the splits are found by their names, as in folder_cnn.py
        for key in default.AUTO_SPLIT_KEYS:
            config.dataset[key] = "auto"
    # Not 'auto': the ImageNet weights want 224x224 RGB images normalized as Keras does.
    config.dataset.image_size = 224
    config.dataset.channels = 3
    # Keras' 'caffe' preprocessing (what the ImageNet weights expect), expressed in RGB.
    config.dataset.mean = KERAS_RESNET50_MEAN
    config.dataset.std = KERAS_RESNET50_STD

    config.augment.random_crop_padding = 0
    config.augment.random_resized_crop = True  # center crop for eval
    config.augment.area_range = (0.25, 1.0)
    config.augment.horizontal_flip = True
    config.augment.brightness = 0.1
    config.augment.contrast = 0.1
    config.augment.saturation = 0.1

    config.model = default.ml_collections.ConfigDict()
    config.model.name = "resnet50_v1"  # the layout of Keras' ResNet50
    config.model.num_filters = 64  # the ImageNet weights' width (also resnet18's etc. option)
    config.half_precision = True

    config.init_from = "keras"
    config.freeze_backbone = True
    config.unfreeze_after_epochs = 3.0
    config.backbone_learning_rate_scale = 0.1

    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01  # the head's; the backbone's is 0.1x once unfrozen
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_epochs = 0.5
    config.label_smoothing = 0.1

    config.batch_size = 32
    config.eval_batch_size = 64
    config.num_epochs = 10.0
    config.eval_every_epochs = 1.0
    return config
