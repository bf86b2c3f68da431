"""Launches imgcls: `python main.py --config=configs/default.py --workdir=runs/default`.

Any config value can be overridden from the command line, e.g.
`--config.optimizer.learning_rate=0.1 --config.model.name=resnet18`. A trained workdir W is
then used with `--mode=eval`, `--mode=predict --workdir=W image.jpg photos/`,
`--mode=export --export_dir=E` and `--mode=serve --port=8000`; they read only W.
"""

import logging as pylogging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up noise out

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

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


# INFO lines kept on the console: ours, and CLU's metric and progress lines. Library chatter
# (Orbax, TFDS, XLA) still shows from WARNING up; `--verbosity=1` shows it all.
_CONSOLE_INFO_FROM = ("imgcls", "main.py", "logging_writer.py", "clu/platform/local.py")


def _quiet_library_info(record) -> bool:
    if record.levelno >= pylogging.WARNING or FLAGS.verbosity >= 1:
        return True
    return any(part in record.pathname for part in _CONSOLE_INFO_FROM)


def parse_flags(argv):
    """Like absl's parser, but a `--config.*` override naming no config key is one clear line."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help.")
    except (AttributeError, KeyError) as e:  # ml_collections: the override's key does not exist
        detail = str(e).strip("'\"").replace("\\'", "'").replace("\\n", " ")
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        sys.exit(
            f"imgcls: error: unknown config key in {' '.join(overrides)}: {detail} "
            "(the config file's get_config() lists the valid keys)"
        )


def main(argv):
    if len(argv) > 1 and FLAGS.mode != "predict":
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().python_handler.addFilter(_quiet_library_info)
    import jax

    from imgcls import train

    if FLAGS.distributed:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    logging.info(
        "JAX devices: %s (process %d of %d)",
        jax.devices(),
        jax.process_index(),
        jax.process_count(),
    )
    if FLAGS.top_k < 1:
        raise app.UsageError(f"--top_k={FLAGS.top_k}: give at least 1.")
    try:
        if FLAGS.mode == "eval":
            return _evaluate()
        if FLAGS.mode == "predict":
            return _predict(argv[1:])
        if FLAGS.mode == "export":
            return _export()
        if FLAGS.mode == "serve":
            return _serve()
        if FLAGS.config is None:
            raise app.UsageError(
                f"--config is required for --mode={FLAGS.mode}, e.g. configs/default.py"
            )
        if FLAGS.mode == "inspect":
            return _inspect()
        result = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ValueError, FileNotFoundError) as e:
        print(f"imgcls: error: {e}", file=sys.stderr)
        return 1
    config = FLAGS.config
    validation = config.dataset.validation_split or config.dataset.validation_fraction
    if validation:
        print(f"Final validation accuracy: {result['eval_accuracy']:.4f}")
    if "report_dir" in result:
        print(f"Final {result['report_split']} accuracy: {result['report_accuracy']:.4f}")
        print(f"Report: {os.path.join(result['report_dir'], 'report.md')}")
    elif not validation:
        print(
            f"Final {config.dataset.eval_split} accuracy: {result['eval_accuracy']:.4f}  "
            f"loss: {result['eval_loss']:.4f}  (workdir: {FLAGS.workdir})"
        )
    return 0


def _evaluate():
    from imgcls import evaluate

    r = evaluate.evaluate_checkpoint(FLAGS.workdir, FLAGS.checkpoint or "latest", FLAGS.split)
    print(
        f"{r['split']} at step {r['step']} ({r['checkpoint']} checkpoint): "
        f"accuracy {r['accuracy']:.4f}  loss {r['loss']:.4f}  macro F1 {r['macro_avg']['f1']:.4f}"
    )
    print(f"Report: {os.path.join(r['report_dir'], 'report.md')}")
    return 0


def _predict(paths):
    from imgcls import predict

    if not paths:
        raise app.UsageError("--mode=predict needs image files or folders: ... a.jpg photos/")
    if FLAGS.output:
        predict.check_output_path(FLAGS.output)  # before the work, not after
    files, errors = predict.find_images(paths)
    batch_size = FLAGS.batch_size or predict.default_batch_size(len(files))
    predictor = predict.Predictor(FLAGS.workdir, FLAGS.checkpoint, batch_size)
    result = predict.predict_found(predictor, files, errors, FLAGS.top_k)
    print(predict.format_table(result))
    if FLAGS.output:
        predict.write_output(result, FLAGS.output)
        print(f"Predictions: {FLAGS.output}")
    print(
        f"{len(result['predictions'])} image(s) predicted, {len(result['errors'])} error(s) "
        f"({predictor.checkpoint} checkpoint, step {predictor.step})."
    )
    return 1 if result["errors"] else 0


def _export():
    from imgcls import export

    if not FLAGS.export_dir:
        raise app.UsageError("--mode=export needs --export_dir=E, the directory to write.")
    paths = export.export_model(FLAGS.workdir, FLAGS.export_dir, FLAGS.checkpoint)
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0


def _serve():
    from imgcls import serve

    serve.serve(
        FLAGS.workdir,
        host=FLAGS.host,
        port=FLAGS.port,
        checkpoint=FLAGS.checkpoint,
        batch_size=FLAGS.batch_size,
        max_upload_bytes=int(FLAGS.max_upload_mb * 2**20),
        top_k=FLAGS.top_k,
    )
    return 0


def _inspect():
    from imgcls import inspection

    summary = inspection.inspect_dataset(FLAGS.config, FLAGS.workdir)
    print(f"Dataset {summary['dataset']}: {summary['num_classes']} classes")
    for role, split in summary["splits"].items():
        counts = summary["class_counts"][split["split"]]
        print(
            f"  {role:<10} {split['split']:<20} {split['examples']:>8} examples, "
            f"{min(counts)}-{max(counts)} per class"
        )
    for split, stats in summary["image_sizes"].items():
        h, w = stats["height"], stats["width"]
        print(
            f"  image sizes in {split} ({stats['sampled']} images): height "
            f"{h['min']}-{h['max']} (median {h['median']:g}), width {w['min']}-{w['max']} "
            f"(median {w['median']:g})"
        )
    for warning in summary["warnings"]:
        print(f"  warning: {warning}")
    print(f"Report: {os.path.join(summary['inspect_dir'], 'inspect.md')}")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
