"""Sweep definitions: grid/zip/product order, seeded sampling, trial names and flags."""

import math
import re

import numpy as np
import pytest

from imgcls.sweeps import hyper

LR = "optimizer.learning_rate"


def test_grid_order_and_size():
    trials = hyper.grid(**{LR: [0.1, 0.3], "batch_size": [32, 64, 128]})
    assert len(trials) == 6
    assert trials[:3] == [{LR: 0.1, "batch_size": b} for b in (32, 64, 128)]  # last key fastest
    assert trials[3] == {LR: 0.3, "batch_size": 32}
    assert [list(t) for t in trials] == [[LR, "batch_size"]] * 6
    assert hyper.grid(widths=[(16, 32), (32, 64)]) == [{"widths": (16, 32)}, {"widths": (32, 64)}]
    assert hyper.grid(n=np.array([1, 2])) == [{"n": 1}, {"n": 2}]
    assert hyper.grid(a=[]) == []
    with pytest.raises(TypeError, match="widths"):
        hyper.grid(widths=(16, 32))


def test_zip_pairs_and_length_error():
    assert hyper.zip_(a=[1, 2], b=["x", "y"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    with pytest.raises(ValueError, match=r"a: 2, b: 3"):
        hyper.zip_(a=[1, 2], b=[1, 2, 3])


def test_product_and_concat():
    trials = hyper.product(hyper.grid(wd=[0.0, 1e-4]), hyper.zip_(lr=[0.1, 0.2], bs=[32, 64]))
    assert trials == [
        {"wd": 0.0, "lr": 0.1, "bs": 32},
        {"wd": 0.0, "lr": 0.2, "bs": 64},
        {"wd": 1e-4, "lr": 0.1, "bs": 32},
        {"wd": 1e-4, "lr": 0.2, "bs": 64},
    ]
    with pytest.raises(ValueError, match="lr"):
        hyper.product(hyper.grid(lr=[0.1]), hyper.grid(lr=[0.2]))
    both = hyper.concat(hyper.grid(a=[1, 2]), [{"b": 3}])
    assert both == [{"a": 1}, {"a": 2}, {"b": 3}]


def test_sample_is_seeded_and_in_range():
    axes = dict(
        lr=hyper.log_uniform(1e-5, 1e-1),
        momentum=hyper.uniform(0.8, 0.99),
        model=hyper.choice(["cnn", "resnet18"]),
        batch_size=64,
    )
    trials = hyper.sample(400, seed=3, **axes)
    assert trials == hyper.sample(400, seed=3, **axes)
    assert trials != hyper.sample(400, seed=4, **axes)
    lrs = np.array([t["lr"] for t in trials])
    assert lrs.min() >= 1e-5 and lrs.max() <= 1e-1
    decades = np.floor(np.log10(lrs)).astype(int)
    counts = np.bincount(decades + 5, minlength=4)
    assert counts.min() > 60, counts  # ~100 per decade: spread in log space, not linear
    assert np.median(lrs) < 3e-3  # a linear uniform would have a median near 0.05
    moms = [t["momentum"] for t in trials]
    assert 0.8 <= min(moms) and max(moms) <= 0.99
    assert {t["model"] for t in trials} == {"cnn", "resnet18"}
    assert all(t["batch_size"] == 64 and type(t["lr"]) is float for t in trials)
    with pytest.raises(ValueError):
        hyper.log_uniform(0.0, 1.0)


def test_repeat_seeds():
    trials = hyper.repeat_seeds(hyper.grid(lr=[0.1, 0.2]), seeds=[0, 1])
    assert trials == [
        {"lr": 0.1, "seed": 0},
        {"lr": 0.1, "seed": 1},
        {"lr": 0.2, "seed": 0},
        {"lr": 0.2, "seed": 1},
    ]
    assert len(set(hyper.validate(trials))) == 4
    with pytest.raises(ValueError, match="seed"):
        hyper.repeat_seeds(trials, [5])


def test_trial_names():
    assert hyper.trial_name({LR: 0.1, "batch_size": 64}) == f"{LR}=0.1,batch_size=64"
    assert hyper.trial_name({"batch_size": 64, LR: 0.1}) == f"batch_size=64,{LR}=0.1"
    assert hyper.trial_name({"lr": 3e-4, "wd": 1e-5}) == "lr=0.0003,wd=1e-05"
    assert hyper.trial_name({"lr": np.float32(0.5)}) == "lr=0.5"
    assert hyper.trial_name({"model.widths": (16, 32)}) == "model.widths=16-32"
    assert hyper.trial_name({"aug": True, "opt": "adamw"}) == "aug=True,opt=adamw"
    assert hyper.trial_name({}) == "base"
    unsafe = hyper.trial_name({"data_dir": "/tmp/a b/../c", "s": "x:y*?"})
    assert unsafe == "data_dir=_tmp_a_b_.._c,s=x_y__"
    assert re.fullmatch(r"[A-Za-z0-9._=,+-]+", unsafe)
    grid = hyper.grid(lr=[0.1, 0.01, 1e-3], wd=[0.0, 5e-4], widths=[(16,), (16, 32)])
    assert len(set(map(hyper.trial_name, grid))) == len(grid)


def test_long_names_are_truncated_with_a_stable_hash():
    a = {f"model.block_{i}.features": 100 + i for i in range(12)}
    b = {**a, "model.block_11.features": 999}  # differs only past the cut
    name_a, name_b = hyper.trial_name(a), hyper.trial_name(b)
    assert len(name_a) == len(name_b) == hyper.MAX_NAME_LENGTH
    assert name_a != name_b and name_a == hyper.trial_name(dict(a))
    assert name_a.startswith("model.block_0.features=100,model.block_1.features=101,")
    assert re.fullmatch(r"[A-Za-z0-9._=,+-]+\+[0-9a-f]{10}", name_a)


def test_validate():
    assert hyper.validate([{}, {"a": 1}]) == ["base", "a=1"]
    with pytest.raises(ValueError, match=r"a=1 \(x2\)"):
        hyper.validate([{"a": 1}, {"b": 2}, {"a": 1}])
    with pytest.raises(ValueError, match="not a dict"):
        hyper.validate([("a", 1)])
    with pytest.raises(ValueError, match="config paths"):
        hyper.validate([{1: 2}])


def test_to_flags_strings():
    overrides = {
        LR: 0.1,
        "optimizer.weight_decay": 1e-05,
        "batch_size": 64,
        "augment": False,
        "model.widths": (16, 32),
        "model.single": (8,),
        "model.name": "resnet18",
        "tags": ("a", "b"),
    }
    assert hyper.to_flags(overrides) == [
        f"--config.{LR}=0.1",
        "--config.optimizer.weight_decay=1e-05",
        "--config.batch_size=64",
        "--config.augment=False",
        "--config.model.widths=(16, 32)",
        "--config.model.single=(8,)",
        "--config.model.name=resnet18",
        "--config.tags=('a', 'b')",
    ]


def test_to_flags_round_trip_through_config_flags(tmp_path):
    flags = pytest.importorskip("absl.flags")
    config_flags = pytest.importorskip("ml_collections.config_flags")
    path = tmp_path / "cfg.py"
    path.write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    c = ml_collections.ConfigDict()\n"
        "    c.batch_size, c.augment, c.seed = 32, True, 0\n"
        "    c.optimizer = ml_collections.ConfigDict({'learning_rate': 1.0, 'name': 'sgd'})\n"
        "    c.model = ml_collections.ConfigDict({'widths': (1, 2), 'dropout': 0.5})\n"
        "    return c\n"
    )
    overrides = {
        "batch_size": 64,
        "augment": False,
        "seed": 7,
        LR: 3e-4,
        "optimizer.name": "adamw",
        "model.widths": (16, 32, 64),
        "model.dropout": 1e-05,
    }
    argv = ["prog", f"--config={path}", *hyper.to_flags(overrides)]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    config = values.config
    for key, want in overrides.items():
        got = config
        for part in key.split("."):
            got = got[part]
        assert got == want and type(got) is type(want), (key, got)
    assert math.isclose(config.optimizer.learning_rate, 3e-4)
