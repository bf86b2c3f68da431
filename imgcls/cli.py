"""main.py's console: flag errors in one line, and library INFO kept off the console.

absl shows every library's INFO lines (Orbax, TFDS, XLA) unless told otherwise; a run's console
should show imgcls's own lines and CLU's metric and progress lines.
"""

import logging as pylogging
import os
import sys

import jax
from absl import flags, logging

# INFO lines kept on the console: ours (the package and main.py, by their full paths: a checkout
# in a folder named imgcls must not let every library through) and CLU's metric and progress
# lines. Library chatter still shows from WARNING up; `--verbosity=1` shows it all.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
MAIN_FILE = os.path.join(os.path.dirname(PACKAGE_DIR), "main.py")
CLU_INFO_FILES = (
    os.path.join("clu", "metric_writers", "logging_writer.py"),
    os.path.join("clu", "platform", "local.py"),
)


def shows_info(pathname: str) -> bool:
    """Whether an INFO line logged from the file `pathname` belongs on the console."""
    path = os.path.abspath(pathname)
    return (
        path.startswith(PACKAGE_DIR + os.sep)
        or path == MAIN_FILE
        or path.endswith(tuple(os.sep + f for f in CLU_INFO_FILES))
    )


def quiet_library_info() -> None:
    """Filters the INFO lines of libraries out of absl's console handler."""

    def keep(record) -> bool:
        if record.levelno >= pylogging.WARNING or flags.FLAGS.verbosity >= 1:
            return True
        return shows_info(record.pathname)

    logging.get_absl_handler().python_handler.addFilter(keep)


def parse_flags(argv):
    """Like absl's parser, but a `--config.*` override naming no config key is one clear line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help.")
    except (AttributeError, KeyError) as e:  # ml_collections: the override's key does not exist
        detail = str(e).strip("'\"").replace("\\'", "'").replace("\\n", " ")
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        sys.exit(
            f"imgcls: error: unknown config key in {' '.join(overrides)}: {detail} "
            "(the config file's get_config() lists the valid keys)"
        )


def start_jax(flag_values) -> None:
    """jax.distributed.initialize() with --distributed (before any JAX computation), then logs
    the devices this process sees."""
    if flag_values.distributed:
        jax.distributed.initialize(
            coordinator_address=flag_values.coordinator_address,
            num_processes=flag_values.num_processes,
            process_id=flag_values.process_id,
        )
    logging.info(
        "JAX devices: %s (process %d of %d)",
        jax.devices(),
        jax.process_index(),
        jax.process_count(),
    )


def run_reporting_errors(run, args) -> int:
    """run(args)'s exit status; the errors a user can act on become one line on stderr.

    A run that stopped with its work saved (TrainingDiverged, preemption.Preempted: errors with
    an `exit_status`) says how to go on and exits with that status; a ValueError or OSError (a
    bad value, a missing or unwritable file) exits with 1. Anything else is a bug: traceback.
    """
    try:
        return run(args)
    except Exception as e:
        if hasattr(e, "exit_status"):
            print(f"imgcls: {e}", file=sys.stderr)
            return e.exit_status
        if isinstance(e, (ValueError, OSError)):
            print(f"imgcls: error: {e}", file=sys.stderr)
            return 1
        raise
