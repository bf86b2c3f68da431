"""Config values are refused before any work, one line each, naming the key and what is valid;
result files are written whole or not at all; errors a user can act on are one line."""

import errno
import json
import os

import pytest
from conftest import load_config

import imgcls
from imgcls import cli
from imgcls.config import check as config_check
from imgcls.run import files

CONFIGS = (
    "default",
    "cifar10_resnet18",
    "imagenet_resnet50",
    "synthetic_benchmark",
    "folder_cnn",
    "transfer_resnet50_folder",
    "cifar10_wrn28_10",
)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_is_valid(name):
    assert config_check.problems(load_config(name)) == []


BAD = [
    ("checkpoint_every_steps", 0, "config.checkpoint_every_steps=0 must be an integer >= 1."),
    ("log_every_steps", 0, "config.log_every_steps=0 must be an integer >= 1."),
    ("num_epochs", 0.0, "config.num_epochs=0.0 must be > 0 (or set config.num_train_steps > 0)."),
    ("num_epochs", -3.0, "config.num_epochs=-3.0 must be > 0"),
    ("optimizer.learning_rate", -0.1, "config.optimizer.learning_rate=-0.1 must be >= 0."),
    ("dataset.image_size", -5, "config.dataset.image_size=-5 must be an integer >= 0 (or 'auto')"),
    ("dataset.validation_fraction", 1.0, "validation_fraction=1.0 must be in [0, 1)"),
    ("dataset.crop_fraction", 0.0, "config.dataset.crop_fraction=0.0 must be in (0, 1]"),
    ("dataset.std", (0.0,), "config.dataset.std=(0.0,) must be a list of numbers > 0"),
    ("dataset.channels", 2, "config.dataset.channels=2 must be one of 1, 3 (or 'auto')"),
    ("dataset.split_fractions", (0.5, 0.5, 0.5), "must be 3 numbers >= 0 that sum to 1"),
    (
        "dataset.pipeline",
        "threads",
        "config.dataset.pipeline='threads' must be one of 'auto', 'tf', 'device'",
    ),
    ("augment.area_range", (0.5, 0.2), "must be 2 numbers with 0 < low <= high <= 1"),
    ("augment.hue", 0.7, "config.augment.hue=0.7 must be in [0, 0.5]"),
    ("label_smoothing", 1.0, "config.label_smoothing=1.0 must be in [0, 1)"),
    ("batch_size", 0, "config.batch_size=0 must be an integer >= 1."),
    ("keep_checkpoints", 0, "config.keep_checkpoints=0 must be an integer >= 1."),
    ("early_stopping_patience", -1, "config.early_stopping_patience=-1 must be an integer >= 0."),
    ("on_nonfinite", "ignore", "config.on_nonfinite='ignore' must be one of 'stop', 'skip'."),
    ("model.name", "vgg", "Unknown model 'vgg' (config.model.name). Valid models: cnn,"),
    ("optimizer.name", "adagrad", "Unknown optimizer 'adagrad' (config.optimizer.name)."),
    ("optimizer.schedule", "step", "Unknown schedule 'step' (config.optimizer.schedule)."),
    ("optimizer.clip_norm", -1.0, "config.optimizer.clip_norm=-1.0 must be >= 0."),
    ("optimizer.plateau_factor", 1.0, "config.optimizer.plateau_factor=1.0 must be in (0, 1)."),
    ("optimizer.plateau_metric", "f1", "config.optimizer.plateau_metric='f1' must be one of"),
    ("optimizer.plateau_patience", 0, "config.optimizer.plateau_patience=0 must be an integer"),
    ("optimizer.trust_coefficient", 0.0, "config.optimizer.trust_coefficient=0.0 must be > 0."),
    ("grad_accum_steps", 0, "config.grad_accum_steps=0 must be an integer >= 1."),
    ("ema_decay", 1.0, "config.ema_decay=1.0 must be in [0, 1)."),
    ("ema_warmup_power", -1.0, "config.ema_warmup_power=-1.0 must be >= 0."),
    ("eval_tta", "rotate", "config.eval_tta='rotate' must be one of 'none', 'flip', 'flip_shift'"),
    ("model.drop_path_rate", 1.0, "config.model.drop_path_rate=1.0 must be in [0, 1)."),
    ("augment.randaugment_num_ops", 0, "config.augment.randaugment_num_ops=0 must be an integer"),
]


def _set(config, key, value):
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_a_bad_value_is_one_line_naming_the_key(key, value, message):
    config = load_config()
    _set(config, key, value)
    found = config_check.problems(config)
    assert len(found) == 1 and message in found[0], found


def test_every_problem_is_listed_and_no_work_is_done(tmp_path):
    config = load_config()
    config.log_every_steps = 0
    config.optimizer.learning_rate = -1.0
    config.dataset.image_size = -5
    workdir = tmp_path / "never_created"
    with pytest.raises(ValueError) as error:
        imgcls.train_and_evaluate(config, str(workdir))
    lines = str(error.value).splitlines()
    assert lines[0] == "3 config values are invalid:" and len(lines) == 4
    assert not workdir.exists()  # refused before any work


def test_num_train_steps_makes_num_epochs_irrelevant():
    config = load_config()
    config.num_epochs, config.num_train_steps = 0.0, 100
    assert config_check.problems(config) == []


def test_atomic_writes_replace_whole_files_only(tmp_path):
    path = tmp_path / "report.json"
    files.write_json(path, {"accuracy": float("nan"), "values": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"accuracy": None, "values": [1.0, None]}

    class Full(Exception):
        pass

    with pytest.raises(Full):
        with files.atomic_open(path) as f:
            f.write('{"half": ')
            raise Full  # the write fails half-way
    assert json.loads(path.read_text())["values"] == [1.0, None]  # the old file, untouched
    assert os.listdir(tmp_path) == ["report.json"]  # no temporary file left


def test_a_write_error_names_the_path_and_the_cause(tmp_path):
    with pytest.raises(files.WriteError) as error:
        files.write_json(tmp_path / "missing" / "metrics.json", {})
    assert str(error.value) == (
        f"could not write {tmp_path}/missing/metrics.json: No such file or directory"
    )
    full = OSError(errno.ENOSPC, "No space left on device")
    assert "free some space" in files.describe(full, "W/eval/x.png")


def test_cli_turns_user_errors_into_one_line_and_keeps_exit_statuses(capsys):
    def fail(error):
        def run(args):
            raise error

        return run

    assert cli.run_reporting_errors(fail(ValueError("config.x=1 must be > 2.")), []) == 1
    assert capsys.readouterr().err == "imgcls: error: config.x=1 must be > 2.\n"
    diverged = imgcls.TrainingDiverged("Training diverged at step 3.")
    assert cli.run_reporting_errors(fail(diverged), []) == 3
    assert capsys.readouterr().err == "imgcls: Training diverged at step 3.\n"
    with pytest.raises(KeyError):  # a bug is not dressed up as a user error
        cli.run_reporting_errors(fail(KeyError("x")), [])


def test_console_info_filter_keeps_imgcls_and_clu_lines_by_their_full_paths():
    """Library INFO stays off the console also when the checkout's folder is named imgcls (its
    venv's libraries then have 'imgcls' in their paths; the old substring match let them all
    through, and a parent reading the console through a pipe could block on Orbax's lines)."""
    checkout = os.path.dirname(cli.PACKAGE_DIR)
    assert cli.shows_info(os.path.join(cli.PACKAGE_DIR, "train.py"))
    assert cli.shows_info(os.path.join(checkout, "main.py"))
    site = os.path.join(checkout, ".venv", "lib", "python3.11", "site-packages")
    assert cli.shows_info(os.path.join(site, "clu", "metric_writers", "logging_writer.py"))
    assert cli.shows_info(os.path.join(site, "clu", "platform", "local.py"))
    for library in ("orbax/checkpoint/_src/path/atomicity.py", "tensorflow_datasets/core/x.py"):
        assert not cli.shows_info(os.path.join(site, *library.split("/")))
    assert not cli.shows_info("/home/me/imgcls/.venv/lib/site-packages/orbax/checkpoint/a.py")
    assert not cli.shows_info(os.path.join(site, "somepackage", "main.py"))


def test_an_unknown_config_key_names_its_own_flag_only():
    args = ["--workdir=W", "--config.optimzer.learning_rate=0.1", "--config.batch_size=32"]
    detail = '\'optimzer\' Did you mean "optimizer" instead of "optimzer"?'
    assert cli.unknown_override(args, detail) == "--config.optimzer.learning_rate=0.1"
    assert cli.unknown_override(args, "no quote") == " ".join(args[1:])
