"""Launches imgcls: `python main.py --config=configs/default.py --workdir=runs/default`.

Any config value can be overridden from the command line, e.g.
`--config.optimizer.learning_rate=0.1 --config.model.name=resnet18`. A trained workdir W is
then used with `--mode=eval`, `--mode=predict --workdir=W image.jpg photos/`,
`--mode=export --export_dir=E` and `--mode=serve --port=8000`; they read only W.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up noise out

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from imgcls import cli
from imgcls.evaluation import evaluate, inspection
from imgcls.inference import export, predict, serve
from imgcls.training import loop

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, logs and reports.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval", "inspect", "predict", "export", "serve"],
    "train: train (or resume) --config in --workdir. eval: evaluate a checkpoint of --workdir. "
    "inspect: describe --config's dataset (sizes, classes, samples, augmentations) in W/inspect. "
    "predict: top-k classes of the image files and folders given as arguments. export: a "
    "SavedModel and a jax.export artifact in --export_dir. serve: a web app and JSON API.",
)
flags.DEFINE_string(
    "checkpoint",
    None,
    "'latest', 'best' or a step number. Default: 'latest' for eval; for predict, export and "
    "serve 'best' when the run validated, else 'latest'.",
)
flags.DEFINE_integer("top_k", 5, "--mode=predict and serve: classes listed per image.")
flags.DEFINE_string("output", None, "--mode=predict: also write the predictions to .csv or .json.")
flags.DEFINE_string(
    "submission",
    None,
    "--mode=predict: a template CSV (e.g. sample_submission.csv: id, then one column per class "
    "or one label column); --output is written with its header and row order.",
)
flags.DEFINE_integer(
    "batch_size",
    None,
    "--mode=predict/serve: images per compiled call (default: predict: the number of images "
    "rounded up to a power of 2, at most 64; serve: 8).",
)
flags.DEFINE_string("export_dir", None, "--mode=export: the directory to write the model into.")
flags.DEFINE_string("host", "127.0.0.1", "--mode=serve: the address to listen on.")
flags.DEFINE_integer("port", 8000, "--mode=serve: the port to listen on.")
flags.DEFINE_float("max_upload_mb", 10.0, "--mode=serve: larger uploads get 413.")
flags.DEFINE_string("split", None, "--mode=eval: the split to evaluate (default: the config's).")
flags.DEFINE_enum(
    "weights",
    None,
    ["ema", "raw"],
    "--mode=eval/predict/export/serve: the trained weights (raw) or their moving average (ema; "
    "runs with config.ema_decay > 0). Default: ema when the run kept it, else raw.",
)
flags.DEFINE_enum(
    "tta",
    None,
    ["none", "flip", "flip_shift"],
    "--mode=eval/predict/export/serve: test-time augmentation (imgcls/evaluation/tta.py). "
    "Default: the run's config.eval_tta.",
)
flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-host training)."
)
flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0 (else auto-detect)."
)
flags.DEFINE_integer("num_processes", None, "With --distributed: number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index.")
config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
flags.mark_flags_as_required(["workdir"])


def _train(args):
    result = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    print(loop.format_result(result, FLAGS.config, FLAGS.workdir))
    return 0


def _evaluate(args):
    checkpoint = FLAGS.checkpoint or "latest"
    f = FLAGS
    result = evaluate.evaluate_checkpoint(f.workdir, checkpoint, f.split, f.weights, f.tta)
    print(evaluate.format_result(result))
    return 0


def _inspect(args):
    print(inspection.format_summary(inspection.inspect_dataset(FLAGS.config, FLAGS.workdir)))
    return 0


def _predict(paths):
    f = FLAGS
    result = predict.predict_paths(
        f.workdir,
        paths,
        f.checkpoint,
        f.batch_size,
        f.top_k,
        f.output,
        f.weights,
        f.tta,
        f.submission,
    )
    print(predict.format_summary(result, FLAGS.output))
    return 1 if result["errors"] else 0


def _export(args):
    f = FLAGS
    paths = export.export_model(f.workdir, f.export_dir, f.checkpoint, f.weights, f.tta)
    print(export.format_summary(paths))
    return 0


def _serve(args):
    upload_bytes = int(FLAGS.max_upload_mb * 2**20)
    f = FLAGS
    serve.serve(
        f.workdir,
        f.host,
        f.port,
        f.checkpoint,
        f.batch_size,
        upload_bytes,
        f.top_k,
        f.weights,
        f.tta,
    )
    return 0


# mode: (its function of the positional arguments, whether it needs --config)
MODES = {
    "train": (_train, True),
    "eval": (_evaluate, False),
    "inspect": (_inspect, True),
    "predict": (_predict, False),
    "export": (_export, False),
    "serve": (_serve, False),
}


def main(argv):
    run, needs_config = MODES[FLAGS.mode]
    if len(argv) > 1 and run is not _predict:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if needs_config and FLAGS.config is None:
        raise app.UsageError(f"--config is required for --mode={FLAGS.mode}: configs/default.py?")
    cli.quiet_library_info()
    cli.start_jax(FLAGS)
    cli.log_to_workdir(FLAGS.workdir, FLAGS.mode, create=needs_config)
    return cli.run_reporting_errors(run, argv[1:])


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
