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
Hardware: 2 CPU cores (x86-64), JAX 0.10.2 CPU backend. The runs below marked "loaded" shared
          the machine (load average 6-9: about twice an idle machine's wall time) and ran on
          the tf.data pipeline, before the random-resized crop ran on the device.
          Commands: the one above with --config.dataset.path=/tmp/c10 (or /tmp/fl/flowers),
          the archives unpacked there.
Result:   with only --config.dataset.path (and --config.dataset.data_dir, --workdir) set:
          ../shared/data/cifar10-jpeg.tar.gz (train/ + test/, 32x32 JPEG): 'auto' chose
          train[:45000] / train[45000:] (stratified) / test, 32x32 native, RGB, mean (0.4913,
          0.4821, 0.4465), std (0.2452, 0.2428, 0.2606), features (16, 32, 64), and (since
          2026-11-30) the device pipeline:
            10 epochs (7,030 steps)  0.7070 test (0.7140 validation)  1m59s wall, idle machine
                                     (2026-12-01, prepared already; 100 s of training, 4,490
                                     images/s; XLA's own convolutions, see imgcls/parallel.py)
            before those:            0.7093 test (0.7174 validation)  2m47s wall, idle machine
                                     (prepared already; 145 s of training, 3,100 images/s)
          loaded, tf.data:
            10 epochs (7,030 steps)  0.6819 test (0.6886 validation)  9m53s wall (17 s to prepare)
             2 epochs                0.5711 test                       2m44s (prepared already)
          Before 'auto' this config stopped at "no split 'validation'"; it took
          --config.dataset.validation_split= --config.dataset.validation_fraction=0.1 to run
          (64x64 upscaled, features (16, 32, 64, 128)): 2 epochs 0.6221 test in 8m48s
          (prepared already; 492 s of training, so 10 epochs would train ~41 min, not run).
          ../shared/data/flowers5.tar.gz (flowers/<class>/, all 128x128; auto split 3,452 / 439
          / 426): 'auto' chose 128x128 native, RGB, mean (0.4577, 0.4196, 0.307), std (0.2663,
          0.24, 0.2565), features (16, 32, 64, 128, 256) and the device pipeline: 0.6737 test
          (0.6629 validation) in 3m52s wall on an idle machine, the folder prepared in the same
          run (530 steps in 213 s; 2026-12-01, XLA's own convolutions). Loaded, on tf.data:
          0.6526 test (0.6424 validation) in 22m11s wall (530 steps in 1,298 s). The settings
          before 'auto' (64x64, mean/std 0.5, features (16, 32, 64, 128)) reach 0.6620 test
          (0.6651 validation) in 6m20s loaded, 3m20s idle (--config.dataset.image_size=64
          trains the network of those settings).
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
