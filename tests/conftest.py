"""Shared fixtures: configs loaded from configs/*.py and one TFDS data_dir per test session."""

import importlib.util
import os
import subprocess
import sys
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # configs/*.py import `configs.default`, as under main.py


def pytest_configure(config):
    """One persistent XLA compilation cache for the whole session: xdist workers and the
    subprocesses tests start inherit it, so a step compiled once is not compiled again
    (about a quarter of the suite's CPU time). Set before any test module imports JAX."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="imgcls-xla-"))
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")


def load_config(name: str = "default"):
    """`configs/<name>.py`'s get_config(), as main.py's --config would load it."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Datasets (digits) are prepared once per session into this TFDS data_dir."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def digits_config(data_dir):
    """The default config, pointed at the session data_dir, with logging every few steps."""
    config = load_config("default")
    config.dataset.data_dir = data_dir
    config.log_every_steps = 10
    config.final_report = False  # tests/test_evaluate.py covers the report
    return config


def run_python(args, env_extra=None, timeout=600):
    """Runs `python args...` in the repo root in a fresh process (fresh JAX device setup)."""
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
