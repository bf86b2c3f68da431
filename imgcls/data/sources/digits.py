"""The 'digits' TFDS builder: scikit-learn's bundled 8x8 handwritten digits.

The embedded default config trains on it because it needs no download (the data ships with
scikit-learn) and trains in seconds on a CPU. As a TFDS builder it goes through exactly the
same reading, sharding and preprocessing code as any catalog dataset. Importing this module
registers the builder under the name 'digits' with TFDS.
"""

import numpy as np
from etils import epath
from sklearn import datasets as sk_datasets

from imgcls.data._tf import tfds
from imgcls.data.sources.catalog import TFDSSource, prepare_builder

TEST_EVERY = 5  # every 5th example of each class goes to 'test' (about 20%)

_DESCRIPTION = f"""\
The 1797 8x8 grayscale handwritten digits of sklearn.datasets.load_digits (UCI optdigits test
set), 10 classes '0'..'9'. Pixel values 0..16 are mapped to uint8 by round(v * 255 / 16).

Split rule (fixed, stratified): within each class, in the original order of load_digits,
the examples at positions {TEST_EVERY - 1}, {2 * TEST_EVERY - 1}, {3 * TEST_EVERY - 1}, ... \
(every {TEST_EVERY}th one) go to 'test' and all others to 'train'; that is
floor(count / {TEST_EVERY}) test examples per class: 355 test and 1442 train examples.
"""


def digits_split(split):
    """(index in load_digits, uint8 image [8, 8, 1], label) of every example of `split`."""
    data = sk_datasets.load_digits()
    images = np.round(data.images * 255.0 / 16.0).astype(np.uint8)[..., None]
    seen = np.zeros(10, dtype=np.int64)
    examples = []
    for index, label in enumerate(data.target):
        is_test = seen[label] % TEST_EVERY == TEST_EVERY - 1
        seen[label] += 1
        if is_test == (split == "test"):
            examples.append((index, images[index], int(label)))
    return examples


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits; 'test' is every 5th example of each class, 'train' the rest."""

    name = "digits"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # TFDS finds a builder's (empty) checksums file next to its code; say where that is, as
    # TFDS's own lookup needs importlib_resources when imgcls is a namespace package.
    code_path = epath.Path(__file__)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/modules/generated/"
            "sklearn.datasets.load_digits.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The data ships with scikit-learn.
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split):
        for index, image, label in digits_split(split):
            yield index, {"image": image, "label": label}


class DigitsSource(TFDSSource):
    """The digits builder, prepared locally into config.dataset.data_dir on first use."""

    def __init__(self, config):
        data_dir = config.dataset.data_dir or None
        # Built from scikit-learn: never look for a prepared copy on GCS.
        download_config = tfds.download.DownloadConfig(try_download_gcs=False)
        builder = prepare_builder(lambda: Digits(data_dir=data_dir), download_config)
        super().__init__(config, builder)
