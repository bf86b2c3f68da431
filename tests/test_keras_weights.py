"""init_from='keras' downloads Keras' ResNet50 weights when not cached (transfer.keras_weights).

Nothing here reaches the internet: a small file is served by an HTTP server on 127.0.0.1, and
the download URL and hash are pointed at it.
"""

import hashlib
import http.server
import io
import os
import socket
import threading

import numpy as np
import pytest

from imgcls.transfer import keras_weights, warm_start

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, np.uint8).tobytes()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """/good: the payload; /cut: announces the payload's length, sends half, and hangs up."""

    requests = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.requests.append(self.path)
        if self.path not in ("/good", "/cut"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if self.path == "/good":
            self.wfile.write(PAYLOAD)
        else:
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache ($KERAS_HOME and ~ both under tmp_path)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if os.path.isfile(os.path.join("/tmp", ".keras", "models", keras_weights.FILE)):
        pytest.skip("Keras' /tmp/.keras cache holds the ResNet50 weights")
    return tmp_path / "keras" / "models"


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{keras_weights.FILE}"


def test_download_into_keras_cache_then_reuse(server, keras_home, monkeypatch):
    monkeypatch.setattr(keras_weights, "URL", f"{server}/good")
    monkeypatch.setattr(keras_weights, "MD5", PAYLOAD_MD5)
    monkeypatch.setattr(keras_weights, "PROGRESS_EVERY_S", 0.0)
    progress = io.StringIO()
    monkeypatch.setattr(keras_weights.sys, "stderr", progress)
    before = len(_Handler.requests)
    path = keras_weights.resnet50_weights()
    assert path == str(keras_home / keras_weights.FILE)
    assert open(path, "rb").read() == PAYLOAD
    assert os.listdir(keras_home) == [keras_weights.FILE]  # no temporary file left
    assert "0.3 / 0.3 MB" in progress.getvalue() and "#" * 30 in progress.getvalue()
    assert keras_weights.resnet50_weights() == path  # cached: no second request
    assert len(_Handler.requests) == before + 1


def test_wrong_hash_keeps_nothing(server, tmp_path):
    target = tmp_path / "models" / keras_weights.FILE
    with pytest.raises(keras_weights.DownloadError) as error:
        keras_weights.download(f"{server}/good", str(target), "0" * 32, progress=io.StringIO())
    message = str(error.value)
    assert PAYLOAD_MD5 in message and "0" * 32 in message and f"{server}/good" in message
    assert os.listdir(target.parent) == []


def test_interrupted_download_is_never_used(server, keras_home, monkeypatch):
    monkeypatch.setattr(keras_weights, "MD5", PAYLOAD_MD5)
    monkeypatch.setattr(keras_weights, "URL", f"{server}/cut")
    with pytest.raises(keras_weights.DownloadError) as error:
        keras_weights.resnet50_weights()
    assert f"{server}/cut" in str(error.value) and "nothing was kept" in str(error.value)
    assert os.listdir(keras_home) == []
    assert keras_weights.cached_path() is None
    # A temporary file a killed download left behind is not the weights file either.
    (keras_home / f"{keras_weights.FILE}.partial-12345").write_bytes(PAYLOAD[:1000])
    monkeypatch.setattr(keras_weights, "URL", f"{server}/good")
    path = keras_weights.resnet50_weights()
    assert open(path, "rb").read() == PAYLOAD


def test_offline_fails_at_once_naming_the_url_and_the_place(keras_home, monkeypatch):
    url = _closed_port_url()
    monkeypatch.setattr(keras_weights, "URL", url)
    with pytest.raises(ValueError) as error:
        warm_start.load_source("keras")
    message = str(error.value)
    assert message.startswith("config.init_from='keras': Could not download")
    assert url in message and str(keras_home / keras_weights.FILE) in message
    assert "--config.init_from=keras:/path/to/" in message
    assert os.listdir(keras_home) == []
