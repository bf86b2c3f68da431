"""Hyperparameter sweeps: `python -m imgcls.sweeps experiments/<name>.py --workdir=W`.

sweep.py (the command line and `run_sweep`), hyper.py (trial lists: grid, zip_, sample,
repeat_seeds), launcher.py (each trial its own main.py process in W/<trial>), study.py (an Optuna
study that launchers on several machines share), results.py (results.csv/md/png; also
`python -m imgcls.sweeps.results W`). Trials run as processes, so this package imports only
config and run (and results.py needs no JAX); never training, evaluation or inference.
"""
