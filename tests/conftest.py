"""Shared fixtures: configs loaded from configs/*.py and one TFDS data_dir per test session."""

import importlib.util
import os
import subprocess
import sys
import tempfile

import pytest

import imgcls

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


# Test files by the CPU time they take (seconds, 2 cores, measured 2026-12-06 with
# --durations=0), longest first: under `--dist loadfile` xdist hands out whole files in
# collection order, so starting the long ones first keeps both workers busy to the end instead
# of one finishing a long file alone.
SLOW_FILES = {
    "test_faults.py": 262,
    "test_sweep.py": 180,
    "test_train.py": 156,
    "test_transfer.py": 155,
    "test_model_contract.py": 100,
    "test_airbench.py": 93,
    "test_sweep_postgres.py": 86,
    "test_models.py": 84,
    "test_training_options.py": 71,
    "test_multihost.py": 71,
    "test_device_pipeline.py": 65,
    "test_keras_import.py": 60,
    "test_notebook.py": 58,
    "test_folder.py": 58,
    "test_evaluate.py": 52,
    "test_folder_labels.py": 45,
    "test_data.py": 42,
    "test_predict.py": 40,
    "test_export.py": 35,
}


def pytest_collection_modifyitems(session, config, items):
    """Longest test files first (SLOW_FILES); within a file the order is unchanged."""
    items.sort(key=lambda item: -SLOW_FILES.get(os.path.basename(str(item.fspath)), 0))


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


TINY_FOLDER_CLASSES = ("red", "green", "blue")


def make_tiny_folder(root, per_class=12, seed=0):
    """root/<class>/* of small noisy images whose dominant colour is the class, in several
    sizes and formats (JPEG, PNG, BMP), so resizing and re-encoding are exercised."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(20, 24), (32, 18), (16, 16), (27, 40)]
    formats = [("jpg", "JPEG"), ("png", "PNG"), ("bmp", "BMP")]
    for label, name in enumerate(TINY_FOLDER_CLASSES):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            height, width = sizes[i % len(sizes)]
            image = rng.integers(0, 120, (height, width, 3))
            image[..., label] += 120
            ext, fmt = formats[i % len(formats)]
            Image.fromarray(image.astype(np.uint8)).save(
                os.path.join(root, name, f"{name}_{i:02d}.{ext}"), format=fmt
            )
    return str(root)


def folder_config(path, data_dir, **dataset):
    """The default config on the image folder `path` at 16x16 RGB, small batches, no report."""
    config = load_config("default")
    config.dataset.name = "folder"
    config.dataset.path = str(path)
    config.dataset.data_dir = str(data_dir)
    config.dataset.image_size = 16
    config.dataset.mean = (0.5, 0.5, 0.5)
    config.dataset.std = (0.5, 0.5, 0.5)
    config.batch_size = 4
    config.eval_batch_size = 8
    config.final_report = False
    for key, value in dataset.items():
        config.dataset[key] = value
    return config


def tiny_folder_config(path, data_dir):
    """A tiny cnn on make_tiny_folder's images at 16x16, half of them held out as 'test'."""
    config = folder_config(path, data_dir, split_fractions=(0.5, 0.0, 0.5))
    config.augment.random_crop_padding = 0
    config.model.features = (8, 16)
    config.model.dense_features = 32
    config.batch_size = 8
    config.num_train_steps = 30
    config.log_every_steps = 10
    return config


@pytest.fixture(scope="session")
def tiny_folder_workdir(tmp_path_factory, data_dir):
    """(workdir, config) of the tiny folder model, trained once per test process."""

    root = make_tiny_folder(tmp_path_factory.mktemp("tiny_folder"))
    config = tiny_folder_config(root, data_dir)
    workdir = str(tmp_path_factory.mktemp("tiny_folder_run"))
    imgcls.train_and_evaluate(config, workdir)
    return workdir, config


def erased_fraction(out, image):
    """Area fraction of the pixels of `out` that differ from `image`, checked to form one
    rectangle (random erasing, in the TF and the JAX augmentation tests)."""
    import numpy as np

    changed = np.any(out != image, axis=-1)
    if not changed.any():
        return 0.0
    rows, cols = np.nonzero(changed)
    box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert box.all(), "the erased region is not a rectangle"
    return box.size / changed.size
