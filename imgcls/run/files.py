"""Writing result files safely: whole or not at all, valid JSON, and errors a person can read.

A report, a config or a figure is written to a temporary file beside its destination and renamed
over it when complete, so a full disk or a kill never leaves a half-written file where a reader
would take it for a complete one (a 0-byte confusion_matrix.png); the temporary file is
removed. JSON never holds NaN or Infinity (not JSON): they are written as null.
"""

import contextlib
import json
import math
import os
import re

import numpy as np


class WriteError(OSError):
    """A file could not be written: the message names the path and the cause."""

    @classmethod
    def of(cls, error: OSError, path) -> "WriteError":
        result = cls(describe(error, path))
        result.errno, result.filename = error.errno, os.fspath(path)
        return result

    def __str__(self) -> str:
        return self.args[0]


def describe(error: OSError, path) -> str:
    cause = error.strerror or str(error)
    return f"could not write {os.fspath(path)}: {cause}" + (
        " (free some space, or write to another disk)"
        if error.errno == 28  # ENOSPC
        else ""
    )


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **kwargs):
    """open() for writing that replaces `path` only once the file is complete.

    An OSError (a full disk, no permission) becomes a WriteError naming `path`.
    """
    path = os.fspath(path)
    temporary = f"{path}.partial-{os.getpid()}"
    try:
        with open(temporary, mode, **kwargs) as f:
            yield f
        os.replace(temporary, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(e, WriteError):
            raise
        raise WriteError.of(e, path) from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def finite_or_none(value):
    """`value` with every NaN or infinite float (also in nested lists and dicts) as None."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def json_text(value, **kwargs) -> str:
    """JSON of `value` with non-finite numbers as null (json.dumps would write NaN)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


def write_json(path, value, indent: int | None = 2) -> None:
    """Writes `value` as JSON to `path`, atomically, non-finite numbers as null."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(json_text(value, indent=indent))


_PARTIAL = re.compile(r"\.partial-(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_partials(directory) -> list[str]:
    """Removes the temporary files (atomic_open's `*.partial-<pid>`) that processes which no
    longer run left in `directory` (a SIGKILL during a write); returns their names."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _PARTIAL.search(name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))
                removed.append(name)
    return removed
