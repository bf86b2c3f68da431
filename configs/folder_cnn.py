"""A small CNN on your own folder of images (config.dataset.name = 'folder'), set up from the data.

Command:  python main.py --config=configs/folder_cnn.py --config.dataset.path=/data/pets \\
              --workdir=runs/pets
          The folder is root/<class>/<images> (split 80/10/10 into train/validation/test by a
          hash of each file's path; see config.dataset.split_fractions) or
          root/<split>/<class>/<images>, its split folders named in any common way (train,
          training, training_set, trn; val, validation, dev, ...; test, testing, eval, ...; any
          case). Without a validation folder, 10% of the training split (stratified) validates;
          without a test folder, the validation split is also the final report's. Everything
          else that says 'auto' below is resolved from statistics recorded when the folder is
          prepared: image_size (the native size when all images share one, else the median
          shorter side rounded to a multiple of 8 in [32, 224]), channels (1 if every image is
          grayscale), mean/std (of the training split) and the cnn's stages (down to a 4x4 map).
          The log, --mode=inspect and W/config.json show what was chosen; any --config value
          given explicitly wins. The folder is prepared once into config.dataset.data_dir and
          prepared again when its files change. For large folders set
          --config.dataset.cache=False (the cache holds the decoded images in memory).
Hardware: 2 CPU cores (x86-64, shared), JAX 0.10.2 CPU backend.
Result:   on ../shared/data/flowers5.tar.gz (4,317 photos, 5 classes, auto split 3,452 / 439 /
          426), before 'auto' (64x64 RGB, mean/std 0.5, features (16, 32, 64, 128)):
          0.6620 test accuracy (0.6651 validation, test macro F1 0.658; chance is 0.24)
          in 3m20s wall (530 steps: 162 s of training, 1.3 s to prepare the folder, plus
          start-up and the final report) with
          --config.dataset.path=<untarred>/flowers --config.dataset.data_dir=/tmp/tfds_flowers.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "folder"
    # Resolved from the data when a run starts (see above); explicit values win.
    with config.ignore_type():  # 'auto' in keys whose defaults are numbers
        for key in default.AUTO_SPLIT_KEYS + ("image_size", "channels", "mean", "std"):
            config.dataset[key] = "auto"
        config.model.features = "auto"  # 64x64: (16, 32, 64, 128), 64 -> 32 -> 16 -> 8 -> 4
    config.augment.random_crop_padding = 0
    config.augment.random_resized_crop = True  # center crop for eval (none at the native size)
    config.augment.area_range = (0.25, 1.0)
    config.augment.horizontal_flip = True

    config.model.dense_features = 256

    config.batch_size = 64
    config.num_epochs = 10.0
    config.eval_every_epochs = 2.0
    return config
