"""Input-pipeline throughput (images/s): tf.data vs the device-resident pipeline.

Cases (the real image folders of ../shared/data, unpacked and prepared once under --work):
- cifar10: the CIFAR-10 JPEG folder at 32x32, pad-and-crop (4) + horizontal flip;
- flowers: the 5-class flowers folder at 224x224; tf.data with random-resized crop + flip +
  color jitter; the device pipeline with flip only, on images resized once when loaded.
Whole epochs are timed: for tf.data, "first epoch" includes JPEG decoding (and filling the
cache) and "steady" is later epochs, each starting by filling its shuffle buffer. For the
device pipeline, "setup" is the one-time decode + copy to the devices, and the rate is of
producing augmented batches on the device. Compare with the step's consumption rate from
benchmarks/train_throughput.py.

    python benchmarks/input_pipeline.py                    # both cases, both pipelines
    python benchmarks/input_pipeline.py --cases cifar10 --epochs 2 --batch_size 256
"""

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402

from configs import default  # noqa: E402
from imgcls import data, parallel  # noqa: E402

ARCHIVES = {"cifar10": "cifar10-jpeg.tar.gz", "flowers": "flowers5.tar.gz"}


def unpack(data_root, work, case):
    """The folder of `case` unpacked under work/ (once)."""
    target = os.path.join(work, case)
    if not os.path.isdir(target):
        archive = os.path.join(data_root, ARCHIVES[case])
        if not os.path.exists(archive):
            sys.exit(f"{archive} not found: pass --data_root=<folder with {ARCHIVES[case]}>")
        os.makedirs(target + ".tmp", exist_ok=True)
        subprocess.run(["tar", "-xzf", archive, "-C", target + ".tmp"], check=True)
        os.rename(target + ".tmp", target)
    return target if case == "cifar10" else os.path.join(target, "flowers")


def make_config(case, folder, work, pipeline, batch_size):
    config = default.get_config()
    ds, aug = config.dataset, config.augment
    ds.update(name="folder", path=folder, data_dir=os.path.join(work, "tfds"), pipeline=pipeline)
    ds.mean, ds.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    if case == "cifar10":
        ds.update(train_split="train", eval_split="test", image_size=32, crop_fraction=1.0)
        aug.update(random_crop_padding=4, horizontal_flip=True)
        ds.shuffle_buffer_size = 50_000
    else:
        ds.update(train_split="train", eval_split="test", image_size=224, crop_fraction=1.0)
        aug.update(random_crop_padding=0, horizontal_flip=True)
        if pipeline == "tf":
            aug.update(random_resized_crop=True, brightness=0.2, contrast=0.2, saturation=0.2)
    config.batch_size = config.eval_batch_size = batch_size
    return config


def rate(iterator, steps, batch_size):
    """images/s over `steps` batches (waiting for device batches to be ready)."""
    t0 = time.perf_counter()
    for _ in range(steps):
        batch = next(iterator)
        if isinstance(batch["image"], jax.Array):  # device pipeline: dispatched asynchronously
            jax.block_until_ready(batch["image"])
    return steps * batch_size / (time.perf_counter() - t0)


def run(case, pipeline, args):
    folder = unpack(args.data_root, args.work, case)
    config = make_config(case, folder, args.work, pipeline, args.batch_size)
    info = data.get_dataset_info(config)
    if case == "cifar10" and info.image_shape[:2] != (32, 32):
        sys.exit(f"unexpected CIFAR-10 image shape {info.image_shape}")
    spe = data.steps_per_epoch(config, info)
    mesh = parallel.create_mesh()
    t0 = time.perf_counter()
    iterator = data.create_train_iterator(config, info, mesh=mesh)
    jax.block_until_ready(next(iterator)["image"])  # builds (device: loads) and compiles
    setup = time.perf_counter() - t0
    row = {"case": case, "pipeline": pipeline, "setup_s": setup, "steps_per_epoch": spe}
    row["first_epoch"] = rate(iterator, spe - 1, args.batch_size)  # the rest of epoch 0
    row["steady"] = rate(iterator, spe * args.epochs, args.batch_size)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["cifar10", "flowers"], choices=ARCHIVES)
    parser.add_argument("--pipelines", nargs="+", default=["tf", "device"])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed after the first")
    parser.add_argument("--data_root", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--work", default="/tmp/imgcls_input_bench")
    args = parser.parse_args()
    print(f"devices: {jax.devices()}, host CPUs: {os.cpu_count()}, batch {args.batch_size}")
    print("| case | pipeline | setup_s | first epoch img/s | steady img/s |")
    print("|---|---|---|---|---|")
    for case in args.cases:
        for pipeline in args.pipelines:
            r = run(case, pipeline, args)
            print(
                f"| {case} | {pipeline} | {r['setup_s']:.1f} | {r['first_epoch']:,.0f} | "
                f"{r['steady']:,.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
