"""Keras' ImageNet ResNet50 weights file: found in Keras' cache, else downloaded into it.

init_from='keras' reads resnet50_weights_tf_dim_ordering_tf_kernels.h5 from the folder Keras
itself caches it in: $KERAS_HOME/models, else ~/.keras/models, else /tmp/.keras/models (Keras'
fallback when ~ is not writable). When none holds it, the file is downloaded from the URL
Keras Applications use (URL, MD5: the hash Keras publishes for it) into the first of those
folders that can be written: into a temporary file beside it (imgcls.run.files.atomic_open), with a
progress bar, checked against the hash, and only then renamed into place. A wrong hash or an
interrupted download leaves nothing behind under the file's name, so a partial file is never
used. Offline, the download fails at once with the URL and the place to put the file. No
Keras, no TensorFlow.
"""

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request

from absl import logging

from imgcls.run import files

FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
URL = f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{FILE}"
MD5 = "2cb95161c43110f7111970584f804107"  # keras.applications.resnet.WEIGHTS_HASHES
TIMEOUT_S = 30  # to connect, and between two reads
CHUNK_BYTES = 1 << 20
PROGRESS_EVERY_S = 0.5


class DownloadError(ValueError):
    """The weights could not be downloaded (offline, interrupted, or not the published file)."""


def cache_dirs() -> list[str]:
    """The folders Keras caches model weights in, in the order it uses them."""
    bases = [os.environ.get("KERAS_HOME"), os.path.join(os.path.expanduser("~"), ".keras")]
    bases.append(os.path.join("/tmp", ".keras"))  # Keras' fallback when ~ is not writable
    return [os.path.join(base, "models") for base in bases if base]


def cached_path(name=FILE) -> str | None:
    """The cached file `name`, or None if no cache folder holds it."""
    for folder in cache_dirs():
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _writable_dir() -> str:
    for folder in cache_dirs():
        base = os.path.dirname(folder)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK) and os.access(base, os.W_OK):
            return folder
    raise DownloadError(f"None of Keras' cache folders can be written: {', '.join(cache_dirs())}.")


def resnet50_weights() -> str:
    """The path of Keras' ResNet50 ImageNet weights: cached, or downloaded now."""
    return cached_path() or download(URL, os.path.join(_writable_dir(), FILE), MD5)


def _help(url, path):
    return (
        f"Download {url} on a machine that is online and put it at {path} (or pass "
        f"--config.init_from=keras:/path/to/{os.path.basename(path)})."
    )


def download(url, path, md5, timeout=TIMEOUT_S, progress=None) -> str:
    """Downloads `url` to `path` atomically, checking its MD5 first; returns path.

    The data goes to a temporary file beside `path` (imgcls.run.files.atomic_open), renamed to
    `path` only when complete and of the expected hash; on any failure the temporary file is
    removed and DownloadError names the URL and where to put the file by hand. `progress`
    (default sys.stderr) shows a progress bar.
    """
    progress = progress or sys.stderr
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    logging.info("Downloading %s to %s", url, path)
    with files.atomic_open(path, "wb") as out:
        digest, size = _fetch(url, out, timeout, progress, path)
        if digest != md5:
            raise DownloadError(
                f"The file downloaded from {url} ({size:,} bytes) has the MD5 {digest}, not the "
                f"published {md5}: nothing was kept. {_help(url, path)}"
            )
    logging.info("Downloaded %s (%s bytes, MD5 checked) to %s", url, f"{size:,}", path)
    return path


def _fetch(url, out, timeout, progress, path):
    """Streams url into the open file `out`; (MD5 hex, bytes). DownloadError when the
    connection fails or ends early."""
    md5 = hashlib.md5()
    done, total = 0, None
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise _failed(url, path, e, done) from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        bar = _ProgressBar(progress, total)
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (http.client.HTTPException, OSError) as e:
                raise _failed(url, path, e, done) from None
            if not chunk:
                break
            out.write(chunk)  # a full disk is files.WriteError, naming the file
            md5.update(chunk)
            done += len(chunk)
            bar.update(done)
        bar.close(done)
    if total is not None and done != total:
        raise DownloadError(
            f"The download of {url} stopped after {done:,} of {total:,} bytes: nothing was "
            f"kept. Try again. {_help(url, path)}"
        )
    return md5.hexdigest(), done


def _failed(url, path, error, done):
    reason = getattr(error, "reason", None) or error
    return DownloadError(
        f"Could not download {url} ({type(error).__name__}: {reason}; offline?); after "
        f"{done:,} bytes, nothing was kept. {_help(url, path)}"
    )


class _ProgressBar:
    """'[#####     ]  52.1 / 102.9 MB' on one line, redrawn at most every PROGRESS_EVERY_S."""

    WIDTH = 30

    def __init__(self, stream, total):
        self.stream, self.total, self.last = stream, total, 0.0

    def update(self, done, force=False):
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        mb = done / 1e6
        if self.total:
            filled = int(self.WIDTH * done / self.total)
            bar = "#" * filled + " " * (self.WIDTH - filled)
            text = f"[{bar}] {mb:6.1f} / {self.total / 1e6:.1f} MB"
        else:
            text = f"{mb:6.1f} MB"
        self.stream.write(f"\r{text}")
        self.stream.flush()

    def close(self, done):
        self.update(done, force=True)
        self.stream.write("\n")
        self.stream.flush()
