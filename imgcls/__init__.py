"""imgcls: image classification with JAX/Flax. This module is the Python API.

    import imgcls

    config = imgcls.load_config("default")  # configs/default.py, as main.py's --config loads it
    config.num_train_steps = 60
    result = imgcls.train_and_evaluate(config, "runs/digits")  # trains, or resumes
    report = imgcls.evaluate_checkpoint("runs/digits", "best")  # W/eval/<split>_<step>/
    predictor = imgcls.Predictor("runs/digits")
    found = imgcls.predict_files(predictor, ["photos/"])
    trials = imgcls.hyper.grid(**{"optimizer.learning_rate": [1e-3, 1e-2]})
    ranked = imgcls.run_sweep(config, trials, "runs/sweep")

Each name is imported on first use, so `import imgcls` is cheap and a name brings in only what
it needs (the sweep results no JAX, a Predictor no TensorFlow). The package, one folder per
concern, imports one way (tests/test_imports.py checks it), top to bottom:

  sweeps/, inference/, training/   sweeps; predict, export, serve; the training loop
  evaluation/                      eval step, checkpoint reports, metrics, TTA, Grad-CAM, inspect
  transfer/                        warm starts, Keras weights
  run/                             a workdir's files: checkpoints, metrics, restoring a model
  config/                          config files, the schema, the rule table, 'auto' resolution
  data/, models/                   datasets and input pipelines; the model registry and contract
  parallel.py, losses.py, values.py   the device mesh, the loss, config values and their rules
"""

import importlib

# name: (module, attribute; None for the module itself)
_API = {
    "load_config": ("imgcls.config.files", "load"),
    "train_and_evaluate": ("imgcls.training.loop", "train_and_evaluate"),
    "format_train_result": ("imgcls.training.loop", "format_result"),
    "TrainingDiverged": ("imgcls.training.guards", "TrainingDiverged"),
    "Preempted": ("imgcls.training.preemption", "Preempted"),
    "evaluate_checkpoint": ("imgcls.evaluation.evaluate", "evaluate_checkpoint"),
    "format_eval_result": ("imgcls.evaluation.evaluate", "format_result"),
    "inspect_dataset": ("imgcls.evaluation.inspection", "inspect_dataset"),
    "Predictor": ("imgcls.inference.predict", "Predictor"),
    "predict_files": ("imgcls.inference.predict", "predict_files"),
    "predict_paths": ("imgcls.inference.predict", "predict_paths"),
    "format_predictions": ("imgcls.inference.predict", "format_table"),
    "export_model": ("imgcls.inference.export", "export_model"),
    "load_jax_export": ("imgcls.inference.export", "load_jax_export"),
    "serve": ("imgcls.inference.serve", "serve"),
    "load_run_config": ("imgcls.run.workdir", "load_config"),
    "load_dataset_info": ("imgcls.run.workdir", "load_dataset_info"),
    "read_metrics": ("imgcls.run.workdir", "read_metrics"),
    "run_sweep": ("imgcls.sweeps.sweep", "run_sweep"),
    "sweep_markdown": ("imgcls.sweeps.results", "markdown"),
    "hyper": ("imgcls.sweeps.hyper", None),
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'imgcls' has no attribute {name!r}")
    module, attribute = _API[name]
    value = importlib.import_module(module)
    value = value if attribute is None else getattr(value, attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted({*globals(), *_API})
