"""Optuna (TPE + median pruning) over the digits CNN's optimizer and regularisation.

Command:  python -m imgcls.sweeps experiments/digits_optuna.py --workdir=runs/digits_optuna \
              --search=optuna --trials=20 --parallel=2
          Several machines: add --storage=postgresql://user:pass@host/db to each.
Hardware: 2 CPU cores.
Result:   not yet measured.
"""

BASE_CONFIG = "configs/default.py"


def get_trials():  # the base config alone, for --search=list
    return [{}]


def search_space(trial):
    """--config.* overrides sampled for one Optuna trial."""
    return {
        "optimizer.learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True),
        "optimizer.weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "model.dropout_rate": trial.suggest_float("dropout_rate", 0.0, 0.5),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "num_epochs": 20.0,
        "eval_every_epochs": 4.0,
    }
