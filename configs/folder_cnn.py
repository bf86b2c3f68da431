"""A small CNN at 64x64 on your own folder of images (config.dataset.name = 'folder').

Command:  python main.py --config=configs/folder_cnn.py --config.dataset.path=/data/pets \\
              --workdir=runs/pets
          The folder is root/<class>/<images> (split 80/10/10 into train/validation/test by a
          hash of each file's path; see config.dataset.split_fractions) or
          root/<split>/<class>/<images> with train/, validation/ and test/ folders (set
          --config.dataset.validation_split / eval_split to other folder names). It is prepared
          once into config.dataset.data_dir and prepared again when its files change. For large
          folders set --config.dataset.cache=False (the cache holds the decoded images in memory).
Hardware: 2 CPU cores (x86-64, shared), JAX 0.10.2 CPU backend.
Result:   on ../shared/data/flowers5.tar.gz (4,317 photos, 5 classes, auto split 3,452 / 439 /
          426): 0.6620 test accuracy (0.6651 validation, test macro F1 0.658; chance is 0.24)
          in 3m20s wall (530 steps: 162 s of training, 1.3 s to prepare the folder, plus
          start-up and the final report) with
          --config.dataset.path=<untarred>/flowers --config.dataset.data_dir=/tmp/tfds_flowers.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "folder"
    config.dataset.image_size = 64
    config.dataset.channels = 3
    config.dataset.validation_split = "validation"
    config.dataset.eval_split = "test"
    config.dataset.mean = (0.5, 0.5, 0.5)
    config.dataset.std = (0.5, 0.5, 0.5)
    config.augment.random_crop_padding = 0
    config.augment.random_resized_crop = True  # center crop for eval
    config.augment.area_range = (0.25, 1.0)
    config.augment.horizontal_flip = True

    config.model.features = (16, 32, 64, 128)  # 64 -> 32 -> 16 -> 8 -> 4
    config.model.dense_features = 256

    config.batch_size = 64
    config.num_epochs = 10.0
    config.eval_every_epochs = 2.0
    return config
