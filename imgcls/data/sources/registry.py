"""The registry of data sources: config.dataset.name -> a Source (imgcls.data.sources.base).

A name not registered here is looked up in TFDS's catalog (cifar10, mnist, imagenet2012, ...).
To add a source, write a Source and register its constructor f(config) here.
"""

from imgcls.data.sources import catalog, digits, folder, synthetic

SOURCES = {
    "digits": digits.DigitsSource,  # scikit-learn's 8x8 digits, bundled (no download)
    "folder": folder.FolderSource,  # your own images at config.dataset.path
    "synthetic": synthetic.SyntheticSource,  # generated images (tests, benchmarks)
}


def get_source(config):
    """The source named by config.dataset.name (TFDS's catalog for any unregistered name)."""
    make = SOURCES.get(config.dataset.name)
    if make is None:
        return catalog.catalog_source(config, registered=tuple(SOURCES))
    return make(config)
