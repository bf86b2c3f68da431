"""Throughput of a trained model out of its workdir: --mode=predict and the --mode=serve API.

- predict: images/s of Predictor end to end (read, decode, crop, model) over --images, and of
  the compiled model function alone on preprocessed images;
- serve: `main.py --mode=serve` in its own process and C concurrent clients posting the images
  to /predict: requests/s, median and 95th-percentile latency, and the mean batch the server
  formed (requests / batches from /healthz), for each concurrency in --concurrency.

    python benchmarks/serving.py                                # trains a digits model first
    python benchmarks/serving.py --workdir=runs/flowers --images=/data/flowers/daisy
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import imgcls  # noqa: E402


def default_workdir(work):
    """A digits model (configs/default.py, 200 steps) and PNGs of its test images."""
    from PIL import Image

    from configs import default
    from imgcls.data.sources import digits

    workdir, images = os.path.join(work, "digits"), os.path.join(work, "digits_png")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        config = default.get_config()
        config.dataset.data_dir = os.path.join(work, "tfds")
        config.num_train_steps, config.final_report = 200, False
        imgcls.train_and_evaluate(config, workdir)
    os.makedirs(images, exist_ok=True)
    for index, image, label in digits.digits_split("test")[:64]:
        Image.fromarray(image[..., 0]).save(os.path.join(images, f"{index}_{label}.png"))
    return workdir, images


def bench_predict(predictor, files, repeats):
    from imgcls.inference import predict

    paths = files * repeats
    predict.predict_files(predictor, files[: predictor.batch_size])  # warm up
    start = time.perf_counter()
    out = predict.predict_files(predictor, paths)
    end_to_end = len(out["predictions"]) / (time.perf_counter() - start)
    images = np.stack([predictor.preprocess(open(f, "rb").read()) for f in files])
    images = np.concatenate([images] * max(1, 4 * predictor.batch_size // len(images) + 1))
    predictor.predict_images(images)
    start = time.perf_counter()
    predictor.predict_images(images)
    return end_to_end, len(images) / (time.perf_counter() - start)


async def _client_load(url, payloads, concurrency, total):
    import httpx

    latencies, sent = [], iter(range(total))

    async def client(http):
        for i in sent:
            name, data = payloads[i % len(payloads)]
            start = time.perf_counter()
            response = await http.post(url, files={"file": (name, data)})
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(timeout=120) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def bench_serve(workdir, batch_size, files, concurrencies, total):
    """Clients here, the server in its own process (main.py --mode=serve), as in deployment."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "main.py", "--mode=serve", f"--workdir={workdir}", f"--port={port}"]
        + [f"--batch_size={batch_size}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    payloads = [(os.path.basename(f), open(f, "rb").read()) for f in files]
    rows = []
    try:
        deadline = time.time() + 300
        while True:
            try:
                httpx.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                if server.poll() is not None or time.time() > deadline:
                    sys.exit(f"The server did not start (exit status {server.poll()}).")
                time.sleep(0.2)
        asyncio.run(_client_load(f"{base}/predict", payloads, 4, 32))  # warm up
        for concurrency in concurrencies:
            before = httpx.get(f"{base}/healthz").json()
            latencies, seconds = asyncio.run(
                _client_load(f"{base}/predict", payloads, concurrency, total)
            )
            after = httpx.get(f"{base}/healthz").json()
            batches = after["batches"] - before["batches"]
            rows.append(
                (
                    concurrency,
                    total / seconds,
                    1000 * statistics.median(latencies),
                    1000 * np.percentile(latencies, 95),
                    (after["requests"] - before["requests"]) / max(batches, 1),
                )
            )
    finally:
        server.terminate()
        server.wait()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="a trained workdir (default: train a digits model)")
    parser.add_argument("--images", help="a folder of images to predict (with --workdir)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "imgcls_serving"))
    parser.add_argument("--batch_size", type=int, default=8, help="images per compiled call")
    parser.add_argument("--predict_batch_size", type=int, default=64)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=256, help="per concurrency level")
    parser.add_argument("--repeats", type=int, default=4, help="passes over --images (predict)")
    args = parser.parse_args()

    import jax

    from imgcls.inference import predict

    if args.workdir:
        workdir, image_dir = args.workdir, args.images
        if not image_dir:
            parser.error("--workdir needs --images, a folder of images to send")
    else:
        workdir, image_dir = default_workdir(args.work)
    files, errors = predict.find_images([image_dir])
    files = files[:256]
    if not files:
        sys.exit(f"No images in {image_dir}: {errors}")

    predictor = predict.Predictor(workdir, batch_size=args.predict_batch_size)
    end_to_end, model_only = bench_predict(predictor, files, args.repeats)
    print(
        f"# {workdir}: {predictor.config.model.name}, images "
        f"{'x'.join(map(str, predictor.image_shape))}, {len(files)} files; "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
    )
    print(f"| predict (batch {predictor.batch_size}) | images/s |")
    print("|---|---|")
    print(f"| end to end (read, decode, crop, model) | {end_to_end:,.0f} |")
    print(f"| model function alone | {model_only:,.0f} |")
    print()

    concurrencies = [int(c) for c in args.concurrency.split(",")]
    rows = bench_serve(workdir, args.batch_size, files, concurrencies, args.requests)
    print(
        f"| serve: clients (batch {args.batch_size}) | requests/s | p50 ms | p95 ms | mean batch |"
    )
    print("|---|---|---|---|---|")
    for concurrency, rate, p50, p95, batch in rows:
        print(f"| {concurrency} | {rate:,.0f} | {p50:.1f} | {p95:.1f} | {batch:.1f} |")


if __name__ == "__main__":
    main()
