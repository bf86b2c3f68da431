"""Learning rate x batch size for the default digits CNN: a 6-trial grid for 2 CPU cores.

Command:  python -m imgcls.sweeps experiments/digits_lr_batch.py --workdir=runs/digits_lr_batch \
              --parallel=2
Hardware: 2 CPU cores, --parallel=2: 83 s wall for the 6 trials (26-30 s each).
Result:   best learning_rate 0.01 at batch 32: 0.9944 test accuracy; then 0.01/64 0.9915,
          0.003/32 and 0.003/64 0.9887, 0.001/32 0.9859, 0.001/64 0.9831.
"""

from imgcls import hyper

BASE_CONFIG = "configs/default.py"


def get_trials():
    return hyper.grid(**{"optimizer.learning_rate": [1e-3, 3e-3, 1e-2], "batch_size": [32, 64]})
