"""--mode=export: the SavedModel and the jax.export artifact predict what the JAX model predicts."""

import json
import os
import textwrap

import numpy as np
import pytest
from conftest import run_python

import imgcls
from imgcls.inference import export, predict

SAVED_MODEL_SCRIPT = """
import sys, numpy as np, tensorflow as tf
export_dir, files, images, out = sys.argv[1:]
import json
info = json.load(open(f"{export_dir}/model_info.json"))
model = tf.saved_model.load(f"{export_dir}/{info['saved_model']}")
data = [open(f, "rb").read() for f in open(files).read().split("\\n")]
served = model.signatures["serving_default"](image_bytes=tf.constant(data))
direct = model.signatures["predict_images"](images=tf.constant(np.load(images)))
text = lambda t: np.char.decode(t.numpy().astype(bytes))
np.savez(out, probabilities=served["probabilities"].numpy(),
         class_names=text(served["class_names"]), top_class=text(served["top_class"]),
         top_probability=served["top_probability"].numpy(),
         direct=direct["probabilities"].numpy())
"""

JAX_EXPORT_SCRIPT = """
import sys, numpy as np
from imgcls.inference import export
predict, info = export.load_jax_export(sys.argv[1])
np.save(sys.argv[3], np.asarray(predict(np.load(sys.argv[2]))))
assert "tensorflow" not in sys.modules, "the jax.export artifact must load without TensorFlow"
"""


@pytest.fixture(scope="module")
def exported(tiny_folder_workdir, tmp_path_factory):
    """The tiny folder model exported with main.py --mode=export, and its JAX reference."""
    workdir, config = tiny_folder_workdir
    export_dir = tmp_path_factory.mktemp("export") / "model"
    proc = run_python(
        ["main.py", "--mode=export", f"--workdir={workdir}", f"--export_dir={export_dir}"]
    )
    assert proc.returncode == 0, proc.stderr
    assert f"SavedModel: {export_dir}/saved_model/30" in proc.stdout  # the step is the version
    root = config.dataset.path
    files = sorted(
        os.path.join(root, c, f)
        for c in sorted(os.listdir(root))
        for f in os.listdir(os.path.join(root, c))
    )[::5]  # JPEG, PNG and BMP files of 4 sizes
    predictor = predict.Predictor(workdir, batch_size=4)
    images = np.stack([predictor.preprocess(open(f, "rb").read()) for f in files])
    return str(export_dir), files, images, predictor, predictor.predict_images(images)


def run_saved_model(export_dir, files, images, tmp_path):
    """The SavedModel's outputs on `files` (serving_default) and `images` (predict_images),
    loaded in a fresh process."""
    (tmp_path / "files.txt").write_text("\n".join(map(str, files)))
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "out.npz"
    args = [export_dir, str(tmp_path / "files.txt"), str(tmp_path / "images.npy"), str(out)]
    proc = run_python(["-c", textwrap.dedent(SAVED_MODEL_SCRIPT), *args])
    assert proc.returncode == 0, proc.stderr
    return np.load(out)


def test_saved_model_in_a_fresh_process_equals_jax(exported, tmp_path):
    export_dir, files, images, predictor, reference = exported
    assert {os.path.splitext(f)[1] for f in files} == {".jpg", ".png", ".bmp"}
    served = run_saved_model(export_dir, files, images, tmp_path)
    assert served["probabilities"].shape == (len(files), 3)
    np.testing.assert_allclose(served["probabilities"], reference, atol=1e-4)
    np.testing.assert_allclose(served["direct"], reference, atol=1e-4)
    names = np.array(predictor.class_names)
    assert (served["class_names"] == names[None]).all()
    np.testing.assert_array_equal(served["top_class"], names[reference.argmax(-1)])
    np.testing.assert_allclose(served["top_probability"], reference.max(-1), atol=1e-4)


def test_jax_export_loads_without_tensorflow(exported, tmp_path):
    export_dir, _, images, _, reference = exported
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "probs.npy"
    proc = run_python(
        [
            "-c",
            textwrap.dedent(JAX_EXPORT_SCRIPT),
            export_dir,
            str(tmp_path / "images.npy"),
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(out), reference, atol=1e-5)


def test_model_info_and_re_export(exported, tiny_folder_workdir, tmp_path):
    export_dir, _, _, predictor, _ = exported
    info = json.load(open(os.path.join(export_dir, "model_info.json")))
    assert info["class_names"] == ["blue", "green", "red"]
    assert info["image_shape"] == [16, 16, 3] and info["image_size"] == 16
    assert info["step"] == predictor.step == 30 and info["checkpoint"] == "best"
    assert info["mean"] == [0.5, 0.5, 0.5] and set(info["platforms"]) == {"cpu", "cuda", "tpu"}
    workdir, _ = tiny_folder_workdir
    (tmp_path / "notes.txt").write_text("someone else's file")
    with pytest.raises(ValueError, match="holds no imgcls export"):
        export.export_model(workdir, str(tmp_path))
    assert (tmp_path / "notes.txt").exists()
    paths = export.export_model(workdir, export_dir, checkpoint="latest")  # replaces the export
    assert os.path.exists(os.path.join(paths["SavedModel"], "saved_model.pb"))
    assert json.load(open(paths["model info"]))["checkpoint"] == "latest"
    assert not os.path.exists(export_dir + ".partial")


def test_grayscale_saved_model_reads_png_gif_and_bmp(digits_config, tmp_path):
    """A 1-channel model (digits): TF's GIF and BMP decoders make no grayscale, so the
    SavedModel converts them from RGB; the digits' gray pixels come out exactly."""
    from PIL import Image

    from imgcls.data.sources import digits

    digits_config.num_train_steps = 30
    workdir = str(tmp_path / "run")
    imgcls.train_and_evaluate(digits_config, workdir)
    export_dir = str(tmp_path / "export")
    export.export_model(workdir, export_dir)
    files = []
    for index, image, _ in digits.digits_split("test")[:3]:
        for ext, fmt in (("png", "PNG"), ("gif", "GIF"), ("bmp", "BMP")):
            files.append(tmp_path / f"{index}.{ext}")
            Image.fromarray(image[..., 0]).save(files[-1], format=fmt)
    predictor = predict.Predictor(workdir, batch_size=8)
    images = np.stack([predictor.preprocess(f.read_bytes()) for f in files])
    for same_digit in images.reshape(3, 3, 8, 8, 1):  # PNG, GIF and BMP decode alike
        assert (same_digit == same_digit[0]).all()
    served = run_saved_model(export_dir, files, images, tmp_path)
    np.testing.assert_allclose(served["probabilities"], predictor.predict_images(images), atol=1e-4)


def test_export_console_summary():
    paths = {"SavedModel": "E/saved_model/30", "jax.export": "E/jax/model.jax_export"}
    assert export.format_summary(paths) == (
        "SavedModel: E/saved_model/30\njax.export: E/jax/model.jax_export"
    )


def test_export_needs_an_export_dir(tiny_folder_workdir):
    workdir, _ = tiny_folder_workdir
    with pytest.raises(ValueError, match="needs --export_dir=E"):
        export.export_model(workdir, "")
