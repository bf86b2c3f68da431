"""A workdir written by an older imgcls still evaluates, predicts, exports, serves and resumes.

tests/fixtures/workdir_b64794a is a real run of commit b64794a (before the weight EMA,
lookahead, TTA, gradient accumulation and the package re-layout): the digits cnn, 22 steps, one
checkpoint, its config.json without the keys added since. Its numbers below are the ones that
commit logged (metrics.jsonl); the resumed run's are what the code before the re-layout logged
when it resumed this workdir to step 44 (the same as that commit's uninterrupted 44-step run).
The copy's data_dir is pointed at the session's, as when a workdir moves to another machine.
"""

import io
import json
import os
import shutil
import warnings

import numpy as np
import pytest
from conftest import ROOT, load_config
from PIL import Image

import imgcls
from imgcls.data.sources import digits
from imgcls.inference import export, serve
from imgcls.run import workdir as workdir_files

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice that it prefers httpx2 to httpx
    from fastapi.testclient import TestClient

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "workdir_b64794a")
# What b64794a logged at step 22, and what resuming to 44 logs (117 / 355 right).
STEP_22 = {"eval_accuracy": 0.19154930114746094, "eval_loss": 2.264474391937256}
STEP_44 = {"eval_accuracy": 0.3295774757862091, "eval_loss": 2.2225444316864014}
TRAIN_LOSS_44 = 2.2545149326324463


@pytest.fixture
def old_workdir(data_dir, tmp_path):
    workdir = str(tmp_path / "old")
    shutil.copytree(FIXTURE, workdir)
    path = os.path.join(workdir, workdir_files.CONFIG_FILE)
    with open(path) as f:
        config = json.load(f)
    config["dataset"]["data_dir"] = data_dir
    with open(path, "w") as f:
        json.dump(config, f)
    return workdir


def digit_pngs(count=4):
    images = []
    for _, image, _ in digits.digits_split("test")[:count]:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def test_the_fixture_is_what_that_commit_wrote():
    rows = workdir_files.read_metrics(FIXTURE)
    assert {k: rows[-1][k] for k in STEP_22} == STEP_22 and rows[-1]["step"] == 22
    with open(os.path.join(FIXTURE, "config.json")) as f:
        assert "ema_decay" not in json.load(f)


def test_evaluate_an_old_workdir(old_workdir):
    result = imgcls.evaluate_checkpoint(old_workdir)
    assert result["step"] == 22 and result["weights"] == "raw" and result["tta"] == "none"
    assert result["accuracy"] == pytest.approx(STEP_22["eval_accuracy"], abs=1e-7)
    assert result["loss"] == pytest.approx(STEP_22["eval_loss"], rel=1e-5)
    assert os.path.exists(os.path.join(result["report_dir"], "report.md"))


def test_predict_export_and_serve_an_old_workdir(old_workdir, tmp_path):
    predictor = imgcls.Predictor(old_workdir, batch_size=4)
    pngs = digit_pngs()
    images = np.stack([predictor.preprocess(data) for data in pngs])
    probabilities = predictor.predict_images(images)
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)

    paths = export.export_model(old_workdir, str(tmp_path / "export"))
    run_export, info = export.load_jax_export(os.path.dirname(os.path.dirname(paths["jax.export"])))
    assert info["step"] == 22 and info["class_names"] == [str(d) for d in range(10)]
    np.testing.assert_allclose(np.asarray(run_export(images)), probabilities, atol=1e-6)

    with TestClient(serve.create_app(predictor, top_k=3)) as client:
        answer = client.post("/predict", files={"file": ("digit.png", pngs[0], "image/png")})
    assert answer.status_code == 200, answer.text
    top = answer.json()["predictions"]
    assert [t["class"] for t in top] == [t["class"] for t in predictor.top_k(probabilities, 3)[0]]


def test_resume_an_old_workdir(old_workdir):
    """main.py's config with the run's overrides resumes from step 22 to 44 as it always did."""
    config = load_config("default")
    with open(os.path.join(old_workdir, "config.json")) as f:
        config.dataset.data_dir = json.load(f)["dataset"]["data_dir"]
    config.model.features, config.model.dense_features = (4, 8), 16
    config.num_train_steps, config.eval_every_epochs = 44, 1.0
    config.log_every_steps = config.checkpoint_every_steps = 11
    config.keep_checkpoints, config.final_report = 1, False
    result = imgcls.train_and_evaluate(config, old_workdir)
    assert result["eval_accuracy"] == pytest.approx(STEP_44["eval_accuracy"], abs=1e-7)
    assert result["eval_loss"] == pytest.approx(STEP_44["eval_loss"], rel=1e-5)
    rows = workdir_files.read_metrics(old_workdir)
    assert [r["step"] for r in rows] == [11, 22, 22, 33, 44, 44]
    assert rows[-2]["train_loss"] == pytest.approx(TRAIN_LOSS_44, rel=1e-5)
    assert imgcls.load_run_config(old_workdir).ema_decay == 0.0  # now written whole
