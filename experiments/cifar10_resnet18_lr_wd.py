"""Peak learning rate x weight decay for ResNet-18 on CIFAR-10, two seeds each (12 trials).

Command:  python -m imgcls.sweeps experiments/cifar10_resnet18_lr_wd.py \
              --workdir=runs/cifar10_lr_wd --parallel=4
          (on a 4-GPU host each trial gets its own GPU)
Hardware: not yet measured.
Result:   not yet measured.
"""

from imgcls import hyper

BASE_CONFIG = "configs/cifar10_resnet18.py"


def get_trials():
    grid = hyper.grid(
        **{"optimizer.learning_rate": [0.05, 0.1, 0.2], "optimizer.weight_decay": [1e-4, 5e-4]}
    )
    return hyper.repeat_seeds(grid, seeds=[0, 1])
