"""main.py's console: flag errors in one line, and library INFO kept off the console.

absl shows every library's INFO lines (Orbax, TFDS, XLA) unless told otherwise; a run's console
should show imgcls's own lines and CLU's metric and progress lines. What the console leaves out
(library lines and tracebacks, the traceback behind a one-line error) goes to the workdir's log
file, W/logs/<mode>.log.
"""

import logging as pylogging
import os
import re
import sys

import jax
from absl import flags, logging

from imgcls.run import interrupts

# INFO lines kept on the console: ours (the package and main.py, by their full paths: a checkout
# in a folder named imgcls must not let every library through) and CLU's metric and progress
# lines. Library chatter still shows from WARNING up; `--verbosity=1` shows it all.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
MAIN_FILE = os.path.join(os.path.dirname(PACKAGE_DIR), "main.py")
CLU_INFO_FILES = (
    os.path.join("clu", "metric_writers", "logging_writer.py"),
    os.path.join("clu", "platform", "local.py"),
)
LOG_DIR = "logs"  # W/logs/<mode>.log (process 0; W/logs/<mode>.process<i>.log for the others)
# Records for the log file only (the traceback behind a one-line error, ignored exceptions).
FILE_ONLY = pylogging.getLogger("imgcls.log_file")
FILE_ONLY.propagate = False
FILE_ONLY.setLevel(pylogging.DEBUG)


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
        if flags.FLAGS.verbosity >= 1 or shows_info(record.pathname):
            return True
        # A library's traceback (Orbax's threads log theirs on a full disk) stays off too: the
        # error it leads to is imgcls's one line.
        return record.levelno >= pylogging.WARNING and not record.exc_info

    logging.get_absl_handler().python_handler.addFilter(keep)
    sys.unraisablehook = _ignored_quietly


def _ignored_quietly(unraisable) -> None:
    """Exceptions Python ignores (raised in a callback or a destructor, such as TensorStore's
    on an event loop already closed after a failed save) go to the log file, not to the
    console as tracebacks."""
    FILE_ONLY.debug(
        "Ignored %s in %r",
        unraisable.exc_type.__name__,
        unraisable.object,
        exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
    )


class _LogFile(pylogging.FileHandler):
    """A log file that a full disk silences instead of printing a traceback per line (the
    console already says what failed to be written)."""

    def handleError(self, record) -> None:
        self.setLevel(pylogging.CRITICAL + 1)


def log_to_workdir(workdir: str, mode: str, create: bool) -> str | None:
    """Appends every log record (also the library lines and tracebacks the console leaves out)
    to W/logs/<mode>.log, when W exists or `create` (training and inspect make W); its path,
    or None when it cannot be written (a read-only W still evaluates and predicts)."""
    if not workdir or not (create or os.path.isdir(workdir)):
        return None
    index = jax.process_index()
    name = f"{mode}.log" if index == 0 else f"{mode}.process{index}.log"
    path = os.path.join(os.path.abspath(workdir), LOG_DIR, name)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handler = _LogFile(path, encoding="utf-8", errors="backslashreplace")
    except OSError as e:
        logging.debug("No log file in %s: %s", workdir, e)
        return None
    handler.setFormatter(logging.PythonFormatter())
    pylogging.getLogger().addHandler(handler)
    FILE_ONLY.addHandler(handler)
    FILE_ONLY.info("imgcls started: %s", " ".join(sys.argv))
    return path


def parse_flags(argv):
    """Like absl's parser, but a `--config.*` override naming no config key is one clear line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help.")
    except (AttributeError, KeyError) as e:  # ml_collections: the override's key does not exist
        detail = str(e).strip("'\"").replace("\\'", "'").replace("\\n", " ")
        sys.exit(
            f"imgcls: error: unknown config key in {unknown_override(argv[1:], detail)}: {detail} "
            "(the config file's get_config() lists the valid keys)"
        )


def unknown_override(args, detail: str) -> str:
    """The `--config.*` argument(s) that name the key ml_collections' message quotes first
    (all of them when none does)."""
    overrides = [a for a in args if a.startswith("--config.")]
    quoted = re.findall(r"'([^']+)'", detail)
    if quoted:
        named = [a for a in overrides if quoted[0] in a.split("=")[0].split(".")[1:]]
        if named:
            return " ".join(named)
    return " ".join(overrides)


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
    an `exit_status`) says how to go on and exits with that status, as does SIGTERM or SIGINT
    anywhere else (interrupts.Interrupted: 143 or 130, saying what was not written); a
    ValueError or OSError (a bad value, a missing or unwritable file) exits with 1. Anything
    else is a bug: traceback.
    """
    try:
        # (several processes: jax.distributed's preemption service handles SIGTERM)
        with interrupts.raising_on_signals(enabled=jax.process_count() == 1):
            return run(args)
    except interrupts.Interrupted as e:
        FILE_ONLY.warning("%s", e)
        print(f"imgcls: {e}", file=sys.stderr)
        return e.exit_status
    except Exception as e:
        if hasattr(e, "exit_status"):
            FILE_ONLY.warning("%s", e)
            print(f"imgcls: {e}", file=sys.stderr)
            return e.exit_status
        if isinstance(e, (ValueError, OSError)):
            FILE_ONLY.info("Stopped on an error the console shows in one line:", exc_info=True)
            print(f"imgcls: error: {e}", file=sys.stderr)
            return 1
        FILE_ONLY.error("Stopped on an unexpected error (a bug):", exc_info=True)
        raise
