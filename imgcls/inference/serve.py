"""A web page and JSON API for a trained model: `main.py --mode=serve --workdir=W --port=8000`.

POST /predict takes one image (multipart field `file`) and answers its top-k classes; GET / is
a page to drop an image on; GET /healthz describes the model and counts the batches run.
Requests that arrive together share one call of the Predictor's compiled function: a single
worker task collects them until a batch is full, waiting up to batch_wait_ms for requests
still being decoded, so throughput under load grows with the batch while a lone request is
predicted at once.

Memory is bounded per request: at most max_upload_bytes are read, an image is refused (413)
before it is decoded when it has more than max_pixels pixels or its decoding would hold more
than max_decoded_pixels (JPEG photos decode shrunk, so this binds PNG and other formats), and
at most MAX_DECODING uploads are decoded at once. With the defaults a request holds at most
about 80 MB (16 MP as RGBA plus the upload), so decoding holds at most MAX_DECODING times that.
"""

import asyncio
import concurrent.futures
import contextlib
import html
import importlib.util
import io
import os

import numpy as np
from absl import logging
from PIL import Image

from imgcls.data import images
from imgcls.inference import predict

SERVE_BATCH_SIZE = 8  # images per compiled call when --batch_size is not given
# A client gets this long for its request line and headers, and for its upload's body; slower
# ones (a slow-loris trickle keeps a connection, and a file, open for as long as it lasts) are
# closed (headers) or answered 408 (body). At most MAX_CONNECTIONS at once; more get 503.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0
MAX_CONNECTIONS = 64
# Uploads decoded at once (each holds at most max_decoded_pixels decoded; see above).
MAX_DECODING = max(4, min(8, os.cpu_count() or 4))
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
FORM_OVERHEAD_BYTES = 16 * 2**10  # multipart boundaries and part headers around the file
CHUNK_BYTES = 64 * 2**10
PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve_page.html")
INSTALL_HINT = "--mode=serve needs fastapi, uvicorn, python-multipart: pip install -e '.[serve]'"
FORM_HINT = (
    "send the image as multipart/form-data field 'file' (curl -F file=@image.jpg URL/predict)"
)


def _import_fastapi():
    """fastapi, or an ImportError that says how to install the optional dependencies."""
    try:
        import fastapi
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    if not any(importlib.util.find_spec(m) for m in ("python_multipart", "multipart")):
        raise ImportError(f"{INSTALL_HINT} (python-multipart parses the uploads)")
    return fastapi


class _UploadTooLarge(Exception):
    """The request body grew past the upload limit while it was read."""


class _Batcher:
    """One queue of (image, future) and the worker that predicts them in batches."""

    def __init__(self, predictor, wait_s):
        self.predictor, self.wait_s = predictor, wait_s
        self.queue = self.model_thread = self.decoding_slots = None
        self.decoding = 0  # requests being decoded: they will join the queue soon
        self.requests = self.batches = self.largest_batch = 0

    def check_running(self):
        if self.queue is None:
            raise RuntimeError("the batch worker is not running (the app's lifespan did not run)")

    async def predict(self, image) -> np.ndarray:
        self.check_running()
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def run(self):
        """Forever: wait for a request, gather what is queued or still being decoded (for up to
        wait_s) into a batch, predict it."""
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(items) < self.predictor.batch_size:
                if not self.queue.empty():
                    items.append(self.queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or not self.decoding:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        items.append(await self.queue.get())
                except TimeoutError:
                    break
            items = [(x, f) for x, f in items if not f.done()]  # clients that gave up
            if not items:
                continue
            try:
                images = np.stack([x for x, _ in items])
                probs = await loop.run_in_executor(
                    self.model_thread, self.predictor.predict_images, images
                )
            except Exception as e:  # every waiting request gets the error, the worker lives on
                for _, f in items:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.requests += len(items)
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(items))
            for (_, f), p in zip(items, probs, strict=True):
                if not f.done():
                    f.set_result(p)


def _blank_png(shape) -> bytes:
    buffer = io.BytesIO()
    Image.new("L" if shape[-1] == 1 else "RGB", shape[1::-1]).save(buffer, format="PNG")
    return buffer.getvalue()


def _message(name, error, advice) -> str:
    return f"{name}: {str(error).rstrip('.')}. {advice}"


def _model_info(predictor) -> str:
    name = predictor.config.dataset.name
    shape = "x".join(map(str, predictor.image_shape))
    return (
        f"{name}: {len(predictor.class_names)} classes, images {shape}, "
        f"{predictor.checkpoint} checkpoint (step {predictor.step})"
    )


def _lifespan(predictor, batcher):
    """The app's start and stop: the preprocessing traced once, the batch worker running."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # Trace the preprocessing once now, not in the first requests (each would trace it).
        await asyncio.to_thread(predictor.preprocess, _blank_png(predictor.image_shape))
        batcher.queue = asyncio.Queue()
        batcher.decoding_slots = asyncio.Semaphore(MAX_DECODING)
        # The model's own thread: it never waits behind uploads being decoded.
        batcher.model_thread = concurrent.futures.ThreadPoolExecutor(1, "imgcls-model")
        worker = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            batcher.model_thread.shutdown(wait=True)
            batcher.queue = batcher.model_thread = batcher.decoding_slots = None

    return lifespan


def _upload_reader(fastapi, max_upload_bytes):
    """async f(request) -> (filename, bytes) of the form's `file`, never holding more than the
    limit allows (a body that grows past it is cut off while it streams in): 413 or 400."""
    # The web stack is the optional [serve] extra: imported once _import_fastapi found it.
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request

    HTTPException = fastapi.HTTPException
    limit_mb = max_upload_bytes / 2**20
    too_large = (
        f"over the upload limit of {max_upload_bytes:,} bytes ({limit_mb:g} MiB); send a "
        "smaller image or restart the server with a larger --max_upload_mb"
    )
    body_limit = max_upload_bytes + FORM_OVERHEAD_BYTES

    async def read_upload(request) -> tuple[str, bytes]:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > body_limit:
            raise HTTPException(413, f"The upload of {int(length):,} bytes is {too_large}.")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPException(400, f"Not a multipart/form-data request: {FORM_HINT}.")
        received = 0

        async def receive():  # counts the body as it streams in (also without Content-Length)
            nonlocal received
            message = await request.receive()
            received += len(message.get("body", b""))
            if received > body_limit:
                raise _UploadTooLarge
            return message

        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                form = await Request(request.scope, receive).form(max_files=4, max_fields=16)
        except TimeoutError:
            raise HTTPException(
                408, f"The upload did not arrive within {BODY_TIMEOUT_S:g} s: send it again."
            ) from None
        except _UploadTooLarge:
            raise HTTPException(413, f"The upload is {too_large}.") from None
        except StarletteHTTPException as e:  # starlette's parser: malformed multipart data
            raise HTTPException(e.status_code, f"{e.detail.rstrip('.')}: {FORM_HINT}.") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(400, f"No file in the form field 'file': {FORM_HINT}.")
            name = upload.filename or "the upload"
            chunks, size = [], 0
            while chunk := await upload.read(CHUNK_BYTES):
                size += len(chunk)
                if size > max_upload_bytes:
                    raise HTTPException(413, f"{name}: the file is {too_large}.")
                chunks.append(chunk)
            return name, b"".join(chunks)
        finally:
            await form.close()

    return read_upload


async def _decoded(fastapi, batcher, name, data, max_pixels, max_decoded_pixels):
    """The upload's preprocessed image, decoded in a thread (PIL and TF release the GIL, the
    event loop stays free); an image that cannot be used is a 415, 400 or 413 saying why."""
    HTTPException = fastapi.HTTPException
    batcher.check_running()
    batcher.decoding += 1
    try:
        async with batcher.decoding_slots:
            return await asyncio.to_thread(
                batcher.predictor.preprocess, data, max_pixels, max_decoded_pixels
            )
    except images.NotAnImage as e:
        raise HTTPException(415, _message(name, e, "Upload an image file instead.")) from None
    except images.BrokenImage as e:
        advice = "Upload the file again, or open and re-save it."
        raise HTTPException(400, _message(name, e, advice)) from None
    except images.ImageTooLarge as e:
        advice = f"Downscale it to at most {max_decoded_pixels:,} pixels."
        raise HTTPException(413, _message(name, e, advice)) from None
    finally:  # (no await between this and the caller's queueing: the worker sees either)
        batcher.decoding -= 1


def create_app(
    predictor,
    *,
    max_upload_bytes=DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels=images.MAX_PIXELS,
    max_decoded_pixels=images.MAX_DECODED_PIXELS,
    top_k=5,
    batch_wait_ms=5.0,
):
    """The FastAPI app serving `predictor` (a predict.Predictor); see the module docstring."""
    fastapi = _import_fastapi()
    from fastapi.responses import HTMLResponse
    from starlette.requests import Request

    batcher = _Batcher(predictor, batch_wait_ms / 1000.0)
    read_upload = _upload_reader(fastapi, max_upload_bytes)
    with open(PAGE_FILE, encoding="utf-8") as f:
        page = f.read().replace("{{MODEL_INFO}}", html.escape(_model_info(predictor)))
    # No /docs, /redoc or /openapi.json: the API is README's two routes (and /healthz).
    app = fastapi.FastAPI(
        title="imgcls",
        lifespan=_lifespan(predictor, batcher),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.post("/predict")
    async def predict_endpoint(request: Request):
        name, data = await read_upload(request)
        image = await _decoded(fastapi, batcher, name, data, max_pixels, max_decoded_pixels)
        probs = await batcher.predict(image)
        return {
            "predictions": predictor.top_k(probs[None], top_k)[0],
            "checkpoint": predictor.checkpoint,
            "step": int(predictor.step),
            "filename": name,
        }

    @app.get("/healthz")
    async def healthz():
        return {
            "status": "ok",
            "classes": len(predictor.class_names),
            "class_names": list(predictor.class_names),
            "image_shape": list(predictor.image_shape),
            "checkpoint": predictor.checkpoint,
            "step": int(predictor.step),
            "weights": predictor.weights,
            "tta": predictor.tta,
            "batch_size": predictor.batch_size,
            "requests": batcher.requests,
            "batches": batcher.batches,
            "largest_batch": batcher.largest_batch,
        }

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    return app


def serve(
    workdir,
    host="127.0.0.1",
    port=8000,
    checkpoint=None,
    batch_size=None,
    max_upload_bytes=DEFAULT_MAX_UPLOAD_BYTES,
    top_k=5,
    weights=None,
    tta=None,
):
    """Loads the model of `workdir` (its `weights`, with test-time augmentation `tta`: see
    predict.Predictor) and serves it with uvicorn until interrupted."""
    predict.check_top_k(top_k)
    _import_fastapi()
    try:  # the optional [serve] extra
        import uvicorn
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    batch_size = batch_size or SERVE_BATCH_SIZE
    predictor = predict.Predictor(workdir, checkpoint, batch_size, weights=weights, tta=tta)
    app = create_app(predictor, max_upload_bytes=max_upload_bytes, top_k=top_k)
    shown = f"[{host}]" if ":" in host else host
    logging.info("Serving %s at http://%s:%d/ (JSON API: POST /predict)", workdir, shown, port)
    uvicorn.Server(server_config(app, host=host, port=port)).run()


def server_config(app, header_timeout_s=HEADER_TIMEOUT_S, **options):
    """uvicorn's Config for `app` (`options`: host, port, ...), with its limits: the header
    timeout (HeaderTimeoutProtocol), MAX_CONNECTIONS, and a 5 s keep-alive."""
    import uvicorn

    options.setdefault("limit_concurrency", MAX_CONNECTIONS)
    protocol = header_timeout_protocol(header_timeout_s)
    return uvicorn.Config(app, http=protocol, timeout_keep_alive=5, **options)


def header_timeout_protocol(timeout_s: float):
    """uvicorn's h11 protocol, closing a connection whose request line and headers have not
    all arrived within `timeout_s` of its opening (or of its previous response). uvicorn has no
    such timeout: every byte that trickles in resets its keep-alive timer."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer = None

        def _arm_header_timer(self):
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _cancel_header_timer(self):
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self):
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_header_timer()

        def handle_events(self):
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's headers are in
                self._cancel_header_timer()

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()  # for the next request on the connection

        def connection_lost(self, exc):
            self._cancel_header_timer()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
