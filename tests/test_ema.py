"""A run with a moving average of its weights (EMA) and reduce-on-plateau, end to end: exact
resume, both weights evaluated and ranked, and the modes' --weights."""

import json
import os

import jax
import numpy as np
import pytest
from conftest import load_config
from test_train import restore_final

import imgcls
from imgcls import parallel
from imgcls.evaluation import evaluate
from imgcls.inference import predict
from imgcls.run import checkpointing, restore
from imgcls.training import loop


class Interrupted(Exception):
    pass


def ema_plateau_config(data_dir):
    config = load_config()
    config.dataset.data_dir = data_dir
    config.final_report = False
    config.num_train_steps = 20
    config.eval_every_epochs = 0.25  # every 5 of the 22 steps per epoch
    config.checkpoint_every_steps = 10
    config.log_every_steps = 5
    config.ema_decay = 0.9
    config.optimizer.schedule = "plateau"
    config.optimizer.warmup_epochs = 0.0
    config.optimizer.plateau_patience = 1
    config.optimizer.plateau_threshold = 0.5  # the loss must halve: the rate falls at step 10
    config.optimizer.plateau_min_lr = 1e-5
    return config


def rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "steps_per_sec"} for line in f]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """(config, uninterrupted workdir and result, interrupted-then-resumed workdir and result)."""
    config = ema_plateau_config(data_dir)
    full = str(tmp_path_factory.mktemp("ema_full"))
    full_result = imgcls.train_and_evaluate(config, full)
    resumed = str(tmp_path_factory.mktemp("ema_resumed"))
    calls = {"n": 0}
    real = parallel.global_batch

    def crash_after_12_steps(mesh, batch):
        calls["n"] += 1
        if calls["n"] > 12:
            raise Interrupted()
        return real(mesh, batch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parallel, "global_batch", crash_after_12_steps)
        with pytest.raises(Interrupted):
            imgcls.train_and_evaluate(config, resumed)
    resumed_result = imgcls.train_and_evaluate(config, resumed)
    return config, full, full_result, resumed, resumed_result


def test_resume_with_ema_and_plateau_equals_an_uninterrupted_run(runs):
    config, full, full_result, resumed, resumed_result = runs
    assert resumed_result == full_result
    assert rows(resumed) == rows(full)
    a, b = restore_final(config, full), restore_final(config, resumed)
    assert int(a.step) == int(b.step) == 20
    assert set(a.ema) == {"params", "batch_stats"}
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):  # EMA, plateau too
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the plateau had cut the rate before the checkpoint the resume started from (step 10)
    rates = {r["step"]: r["learning_rate"] for r in rows(full) if "learning_rate" in r}
    assert rates[10] == pytest.approx(3e-3) and rates[15] == pytest.approx(0.1 * 3e-3)
    assert float(a.opt_state[-1].scale) == pytest.approx(1e-5 / 3e-3)  # down to plateau_min_lr


def test_both_weights_are_evaluated_and_the_better_ranks(runs):
    config, full, result, _, _ = runs
    evals = [r for r in rows(full) if "eval_accuracy" in r]
    assert len(evals) == 4
    assert all("eval_ema_accuracy" in r and r["eval_ema_loss"] != r["eval_loss"] for r in evals)
    with checkpointing.Checkpointer.of_workdir(full) as ckpt:
        best = ckpt.best_step()
    saved = [r for r in evals if r["step"] in (10, 20)]
    assert best == max(saved, key=checkpointing.best_score)["step"]
    assert checkpointing.best_weights({"eval_accuracy": 0.5, "eval_ema_accuracy": 0.6}) == "ema"
    assert checkpointing.best_weights({"eval_accuracy": 0.6, "eval_ema_accuracy": 0.6}) == "raw"
    lines = loop.format_result(result, config, full).splitlines()
    assert lines[1] == (
        f"EMA weights: accuracy {result['eval_ema_accuracy']:.4f}  "
        f"loss: {result['eval_ema_loss']:.4f}"
    )


def test_modes_use_the_average_unless_told_otherwise(runs):
    _, full, _, _, _ = runs
    averaged = predict.Predictor(full, "latest", batch_size=8)
    trained = predict.Predictor(full, "latest", batch_size=8, weights="raw")
    assert (averaged.weights, trained.weights) == ("ema", "raw")
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)
    assert not np.allclose(averaged.predict_images(images), trained.predict_images(images))

    result = evaluate.evaluate_checkpoint(full, "latest", weights="raw", tta="flip")
    assert (result["weights"], result["tta"]) == ("raw", "flip")
    assert result["report_dir"].endswith(os.path.join("eval", "test_20_raw_flip"))
    report = open(os.path.join(result["report_dir"], "report.md")).read()
    assert "- weights: `raw`" in report and "- tta: `flip`" in report
    assert "(latest checkpoint, TTA flip)" in evaluate.format_result(result)


def test_weights_choices(runs, digits_config):
    config, full, *_ = runs
    assert restore.check_weights(None, config) == "ema"
    assert restore.check_weights(None, digits_config) == "raw"
    with pytest.raises(ValueError, match="kept no moving average.*--weights=raw"):
        restore.check_weights("ema", digits_config)
    with pytest.raises(ValueError, match="--weights='best'"):
        restore.check_weights("best", config)
    # resuming with EMA switched off says so (instead of a "corrupt checkpoint")
    other = config.copy_and_resolve_references()
    other.ema_decay = 0.0
    with pytest.raises(ValueError, match=r"ema_decay: 0\.9 -> 0\.0"):
        imgcls.train_and_evaluate(other, full)
    other.allow_config_change = True  # accepted: the checkpoints' layout still says why not
    with pytest.raises(ValueError, match="keeps a moving average of the weights, this config"):
        imgcls.train_and_evaluate(other, full)
