"""The serve app: /predict answers and errors, batching of concurrent requests, the web page in
a real browser (headless Chromium through Selenium), all on one tiny model trained once."""

import asyncio
import base64
import contextlib
import io
import shutil
import socket
import sys
import threading
import time
import warnings

import httpx
import numpy as np
import pytest
from conftest import load_config
from PIL import Image

import imgcls
from imgcls.data.sources import digits
from imgcls.inference import predict, serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice that it prefers httpx2 to httpx
    from fastapi.testclient import TestClient

TOP_K = 5


def png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array).squeeze(-1)).save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """A real grayscale JPEG cut in half (its headers intact, half its scan data gone)."""
    noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) // 2]


def bomb_png(side) -> bytes:
    """A valid 1-bit PNG of side x side pixels: a few KB on disk, side**2 pixels decoded."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def workdir(data_dir, tmp_path_factory):
    config = load_config("default")
    config.dataset.data_dir = data_dir
    config.num_train_steps = 30
    config.final_report = False
    config.log_every_steps = 10
    workdir = str(tmp_path_factory.mktemp("serve_run"))
    imgcls.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="module")
def predictor(workdir):
    return predict.Predictor(workdir, batch_size=4)


@pytest.fixture(scope="module")
def images():
    """PNG bytes of the first 8 digits of the test split (all different images)."""
    return [png_bytes(image) for _, image, _ in digits.digits_split("test")[:8]]


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(serve.create_app(predictor, top_k=TOP_K)) as client:
        yield client


@contextlib.contextmanager
def running_server(app, **options):
    """A real uvicorn server of `app` on a free port in a thread, configured as --mode=serve
    configures it (`options`: serve.server_config's); yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(serve.server_config(app, log_level="warning", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def server_url(predictor):
    # A long batch window: the concurrent requests of test_batching surely meet in batches
    # (a full batch of 4 is predicted at once, so no request waits the whole window).
    with running_server(serve.create_app(predictor, top_k=TOP_K, batch_wait_ms=300)) as url:
        yield url


def reference(predictor, data) -> np.ndarray:
    """The probabilities of one image predicted alone, outside the server."""
    return predictor.predict_images(predictor.preprocess(data)[None])[0]


def check_prediction(predictor, body, data, filename="digit.png"):
    """Asserts that a /predict JSON body is the top-5 of `data` predicted alone."""
    assert body["checkpoint"] == predictor.checkpoint and body["step"] == predictor.step
    assert body["filename"] == filename
    predictions = body["predictions"]
    assert len(predictions) == TOP_K
    classes = [p["class"] for p in predictions]
    probs = np.array([p["probability"] for p in predictions])
    assert set(classes) <= set(predictor.class_names) and len(set(classes)) == TOP_K
    assert np.all(np.diff(probs) <= 0) and probs.sum() <= 1 + 1e-6
    expected = reference(predictor, data)
    top = np.argsort(-expected, kind="stable")[:TOP_K]
    assert classes == [predictor.class_names[i] for i in top]
    np.testing.assert_allclose(probs, expected[top], atol=1e-6, rtol=0)


def post(client, data, filename="digit.png", content_type="image/png", **kwargs):
    return client.post("/predict", files={"file": (filename, data, content_type)}, **kwargs)


def test_predict_png(client, predictor, images):
    response = post(client, images[0])
    assert response.status_code == 200, response.text
    check_prediction(predictor, response.json(), images[0])


def _upload(filename, make_data, content_type):
    return lambda: dict(files={"file": (filename, make_data(), content_type)})


# name: (() -> client.post keyword arguments, expected status, phrases the detail must hold)
BAD_REQUESTS = {
    "text_file": (
        _upload("notes.txt", lambda: b"just some text\n" * 20, "text/plain"),
        415,
        ["notes.txt", "not an image", "PNG", "Upload an image"],
    ),
    "empty_file": (_upload("empty.png", lambda: b"", "image/png"), 415, ["empty.png"]),
    "truncated_jpeg": (
        _upload("cut.jpg", truncated_jpeg, "image/jpeg"),
        400,
        ["cut.jpg", "truncated", "again"],
    ),
    # 400M pixels: PIL itself refuses it as a bomb when it reads the header.
    "bomb_20000": (
        _upload("bomb.png", lambda: bomb_png(20000), "image/png"),
        413,
        ["bomb.png", "decompression bomb", "Downscale"],
    ),
    # 64M pixels: under PIL's limit, over max_pixels (50M): refused before decoding.
    "bomb_8000": (
        _upload("big.png", lambda: bomb_png(8000), "image/png"),
        413,
        ["big.png", "8000x8000", "50,000,000"],
    ),
    "missing_field": (
        lambda: dict(files={"image": ("digit.png", b"\x89PNG", "image/png")}),
        400,
        ["'file'"],
    ),
    "not_multipart": (
        lambda: dict(json={"file": "digit.png"}),
        400,
        ["multipart/form-data", "'file'"],
    ),
    "bad_multipart": (
        lambda: dict(
            content=b"--x\r\nnonsense",
            headers={"content-type": "multipart/form-data; boundary=y"},
        ),
        400,
        ["multipart", "'file'"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_then_valid(client, predictor, images, case):
    make_kwargs, status, phrases = BAD_REQUESTS[case]
    response = client.post("/predict", **make_kwargs())
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    for phrase in phrases:
        assert phrase in detail
    # The server goes on serving, and correctly.
    response = post(client, images[1])
    assert response.status_code == 200, response.text
    check_prediction(predictor, response.json(), images[1])


def test_upload_limit(predictor, images):
    limit = 1000
    app = serve.create_app(predictor, max_upload_bytes=limit, top_k=TOP_K)
    big = bytes(5 * limit)
    with TestClient(app) as client:
        # Content-Length over the limit: refused before the body is read.
        response = post(client, big, filename="big.png")
        assert response.status_code == 413
        detail = response.json()["detail"]
        assert "1,000 bytes" in detail and "--max_upload_mb" in detail
        # A file just over the limit, its form within the body allowance: the file is counted.
        response = post(client, bytes(limit + 1), filename="just_over.png")
        assert response.status_code == 413
        assert "just_over.png" in response.json()["detail"]
        # No Content-Length (a chunked body): the bytes are counted as they arrive.
        body = b"".join(
            [
                b"--b0undary\r\n",
                b'Content-Disposition: form-data; name="file"; filename="big.png"\r\n',
                b"Content-Type: image/png\r\n\r\n",
                bytes(40 * limit),
                b"\r\n--b0undary--\r\n",
            ]
        )

        def chunks():
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        response = client.post(
            "/predict",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b0undary"},
        )
        assert response.status_code == 413
        assert "--max_upload_mb" in response.json()["detail"]
        assert len(images[2]) < limit
        response = post(client, images[2])
        assert response.status_code == 200, response.text
        check_prediction(predictor, response.json(), images[2])


def test_index_page(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for element in ['id="file"', 'id="results"', 'id="error"', 'id="preview"', 'id="drop"']:
        assert element in page
    assert "digits: 10 classes, images 8x8x1" in page  # the model, in the title
    assert "{{" not in page
    # Self-contained: no external scripts, styles or fonts (the server may have no internet).
    assert "<script src" not in page and "<link" not in page and "http" not in page


def test_healthz(client, predictor):
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["classes"] == 10 and body["class_names"] == [str(d) for d in range(10)]
    assert body["image_shape"] == [8, 8, 1]
    assert body["checkpoint"] == predictor.checkpoint and body["step"] == predictor.step == 30
    assert body["batch_size"] == 4
    for key in ("requests", "batches", "largest_batch"):
        assert isinstance(body[key], int)


def test_serve_builds_the_app(workdir, images, monkeypatch):
    """serve(), as main.py --mode=serve calls it: the serving batch size and the flags' values."""
    import uvicorn

    calls = {}

    class Server:  # records what serve() would run
        def __init__(self, config):
            calls["config"] = config

        def run(self):
            calls["ran"] = True

    monkeypatch.setattr(uvicorn, "Server", Server)
    serve.serve(workdir, host="0.0.0.0", port=8123, max_upload_bytes=1234, top_k=3)
    config = calls["config"]
    assert calls["ran"] and config.host == "0.0.0.0" and config.port == 8123
    assert config.limit_concurrency == serve.MAX_CONNECTIONS
    assert config.http.__name__ == "HeaderTimeoutProtocol"
    with TestClient(config.app) as client:
        assert client.get("/healthz").json()["batch_size"] == serve.SERVE_BATCH_SIZE
        response = post(client, images[0])
        assert response.status_code == 200 and len(response.json()["predictions"]) == 3
        response = post(client, bytes(2000))
        assert response.status_code == 413 and "1,234 bytes" in response.json()["detail"]


def test_missing_dependencies(predictor, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # `import fastapi` raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[serve\]'"):
        serve.create_app(predictor)


def test_a_client_that_trickles_its_headers_is_closed_within_the_timeout(predictor, images):
    """A slow-loris client (one header line every 0.2 s, for up to 10 s) is disconnected by the
    header timeout (1 s here) while a normal request on another connection is answered."""
    app = serve.create_app(predictor, top_k=TOP_K)
    with running_server(app, header_timeout_s=1.0) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            answer = httpx.post(f"{url}/predict", files={"file": ("a.png", images[0])})
            assert answer.status_code == 200
            closed, started = False, time.monotonic()
            while time.monotonic() - started < 10 and not closed:
                try:
                    slow.sendall(b"X-Slow: 1\r\n")
                    slow.settimeout(0.2)
                    closed = slow.recv(1) == b""
                except TimeoutError:
                    continue
                except OSError:  # reset by the server
                    closed = True
            assert closed, "the trickling connection was kept open"
            assert time.monotonic() - started < 10
        assert httpx.get(f"{url}/docs").status_code == 404  # no API docs served
        assert httpx.get(f"{url}/openapi.json").status_code == 404


def test_batching(server_url, predictor, images):
    """Concurrent requests share batches of the one function compiled at start-up: serving
    lowers nothing to XLA (jax.monitoring sees every lowering in this process, persistent
    compilation cache or not)."""
    import jax

    lowerings = []

    def on_lowering(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowerings.append(duration)

    jax.monitoring.register_event_duration_secs_listener(on_lowering)
    try:
        _check_batching(server_url, predictor, images)
        assert not lowerings
        jax.jit(lambda x: x * 3.25 + 1.0)(np.arange(7.0))  # the listener does see a new one
    finally:
        jax.monitoring.unregister_event_duration_listener(on_lowering)
    assert len(lowerings) == 1


def _check_batching(server_url, predictor, images):
    async def predict_all():
        async with httpx.AsyncClient(base_url=server_url, timeout=60) as client:
            before = (await client.get("/healthz")).json()
            responses = await asyncio.gather(
                *[
                    client.post("/predict", files={"file": (f"{i}.png", data, "image/png")})
                    for i, data in enumerate(images)
                ]
            )
            after = (await client.get("/healthz")).json()
        return before, responses, after

    before, responses, after = asyncio.run(predict_all())
    for i, (response, data) in enumerate(zip(responses, images, strict=True)):
        assert response.status_code == 200, response.text
        # Each answer is its own image's, equal to it predicted alone whatever else shared
        # its batch (padding included).
        check_prediction(predictor, response.json(), data, filename=f"{i}.png")
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == len(images)
    assert batches < requests and after["largest_batch"] > 1
    assert after["largest_batch"] <= predictor.batch_size


# In the page: drops a file (base64 data, name) on the drop zone, as a drag and drop would.
DROP_FILE = """
const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], arguments[1], {type: "image/png"}));
document.getElementById("drop").dispatchEvent(
  new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
"""


def _browser_paths():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        return None, None, "chromium or chromedriver is not installed"
    return browser, driver, ""


def test_browser(server_url, predictor, images, tmp_path, monkeypatch):
    browser, driver_path, why_not = _browser_paths()
    if why_not:
        pytest.skip(why_not)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let selenium-manager try a download
    image_path = tmp_path / "digit.png"
    image_path.write_bytes(images[3])
    text_path = tmp_path / "notes.txt"
    text_path.write_text("not an image\n")
    expected, dropped = [
        httpx.post(f"{server_url}/predict", files={"file": ("d.png", data, "image/png")}).json()[
            "predictions"
        ]
        for data in (images[3], images[4])
    ]
    assert [p["class"] for p in expected] != [p["class"] for p in dropped]

    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.binary_location = browser
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.get(server_url + "/")
        assert "10 classes" in driver.title
        driver.find_element(By.ID, "file").send_keys(str(image_path))
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .bar")) == TOP_K)
        bars = driver.find_elements(By.CSS_SELECTOR, "#results .bar")
        names = [bar.find_element(By.CLASS_NAME, "name").text for bar in bars]
        assert names == [p["class"] for p in expected]
        assert set(names) <= set(predictor.class_names)
        pcts = [bar.find_element(By.CLASS_NAME, "pct").text for bar in bars]
        assert all(pct.endswith("%") for pct in pcts)
        np.testing.assert_allclose(
            [float(pct[:-1]) for pct in pcts],
            [100 * p["probability"] for p in expected],
            atol=0.05 + 1e-9,
        )
        preview = driver.find_element(By.ID, "preview")
        assert preview.is_displayed()
        assert driver.execute_script("return arguments[0].naturalWidth", preview) == 8
        assert not driver.find_element(By.ID, "error").is_displayed()

        # Drag and drop: a file dropped on the drop zone is classified the same way.
        driver.execute_script(DROP_FILE, base64.b64encode(images[4]).decode(), "dropped.png")
        wait.until(
            lambda d: (
                [
                    bar.find_element(By.CLASS_NAME, "name").text
                    for bar in d.find_elements(By.CSS_SELECTOR, "#results .bar")
                ]
                == [p["class"] for p in dropped]
            )
        )

        driver.find_element(By.ID, "file").send_keys(str(text_path))
        error = driver.find_element(By.ID, "error")
        wait.until(lambda d: error.is_displayed() and "not an image" in error.text)
        assert "notes.txt" in error.text
        assert driver.find_elements(By.CSS_SELECTOR, "#results .bar") == []
    finally:
        driver.quit()
