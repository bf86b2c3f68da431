"""Launches imgcls: `python main.py --config=configs/default.py --workdir=runs/default`.

Any config value can be overridden from the command line, e.g.
`--config.optimizer.learning_rate=0.1 --config.model.name=resnet18`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up noise out

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, logs and reports.")
flags.DEFINE_enum("mode", "train", ["train"], "What to do with the workdir.")
flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-host training)."
)
config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    import jax

    from imgcls import train

    if FLAGS.distributed:
        jax.distributed.initialize()
    logging.info(
        "JAX devices: %s (process %d of %d)",
        jax.devices(),
        jax.process_index(),
        jax.process_count(),
    )
    if FLAGS.config is None:
        raise app.UsageError("--config is required for --mode=train, e.g. configs/default.py")
    try:
        result = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ValueError, FileNotFoundError) as e:
        print(f"imgcls: error: {e}", file=sys.stderr)
        return 1
    split = FLAGS.config.dataset.eval_split
    print(
        f"Final {split} accuracy: {result['eval_accuracy']:.4f}  "
        f"loss: {result['eval_loss']:.4f}  (workdir: {FLAGS.workdir})"
    )
    return 0


if __name__ == "__main__":
    app.run(main)
