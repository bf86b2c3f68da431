"""Learning rate x batch size for the default digits CNN: a 6-trial grid for 2 CPU cores.

Command:  python -m imgcls.sweep experiments/digits_lr_batch.py --workdir=runs/digits_lr_batch \
              --parallel=2
Hardware: 2 CPU cores.
Result:   not yet measured.
"""

from imgcls import hyper

BASE_CONFIG = "configs/default.py"


def get_trials():
    return hyper.grid(**{"optimizer.learning_rate": [1e-3, 3e-3, 1e-2], "batch_size": [32, 64]})
