"""A run's config with every 'auto' value resolved, before anything is built.

The dataset's split keys and image settings come from the data (imgcls.data.resolve_dataset,
which prepares it on first use), then the model's widths for the resolved image shape
(imgcls.models.sizing). Each choice is logged; the resolved config is what a run saves as
W/config.json, so eval, predict, export and serve read plain values.
"""

from absl import logging

from imgcls import data
from imgcls.models import sizing


def resolve_run(config):
    """(a copy of config with every 'auto' value resolved, its DatasetInfo, notes for the log).

    With several processes, process 0 prepares the data while the others wait.
    """
    config, info, notes = data.process_zero_first(data.resolve_dataset, config)
    config, model_notes = sizing.resolve_model(config, info.image_shape)
    notes = notes + model_notes
    for note in notes:
        logging.info("%s", note)
    return config, info, notes
