"""Wall time from start to final accuracy over seeds, as the airbench paper counts it.

Each seed's time runs from calling train.train_and_evaluate to its final evaluation (the
config's test-time augmentation included): the data-dependent initialisation and loading the
split onto the devices count; preparing the dataset the first time does not (it is done
before the clock starts). As the reference times compiled runs after a warm-up run, each
seed first trains once untimed (compiling: the seed is a constant of the jitted step), and
its timed run reads the compiled functions from JAX's persistent compilation cache (a
temporary folder); the warm-up times, compilation included, are printed too. Prints each run
and the mean and spread of accuracy and time.

    python benchmarks/time_to_accuracy.py --config=configs/cifar10_airbench94.py --seeds 0 1 2 3 4
    python benchmarks/time_to_accuracy.py --config=configs/cifar10_airbench94.py --seeds 0 \\
        --set dataset.name=folder --set dataset.path=/data/cifar10 \\
        --set dataset.data_dir=/tmp/tfds_cifar --set half_precision=False
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

import imgcls  # noqa: E402
from imgcls import data  # noqa: E402
from imgcls.config import files as config_files  # noqa: E402


def train_once(config_path, seed, assignments, workdir) -> tuple[float, float]:
    """(seconds, final accuracy) of one training of the config with `seed`."""
    config = config_files.load(config_path)
    for assignment in assignments:
        config_files.set_value(config, assignment)
    config.seed = seed
    config.final_report = False
    config.checkpoint_every_steps = 10**9  # the final step is saved, nothing else
    data.get_dataset_info(config)  # prepares the dataset the first time: not timed
    start = time.perf_counter()
    result = imgcls.train_and_evaluate(config, workdir)
    return time.perf_counter() - start, result["eval_accuracy"]


def run(config_path, seeds, assignments, root) -> list[dict]:
    """[{'seed', 'seconds', 'accuracy', 'warmup_seconds'}]: per seed, an untimed warm-up
    training that compiles, then the timed one."""
    rows = []
    for seed in seeds:
        warmup, _ = train_once(config_path, seed, assignments, os.path.join(root, f"warm{seed}"))
        seconds, accuracy = train_once(
            config_path, seed, assignments, os.path.join(root, f"{seed}")
        )
        rows.append({"seed": seed, "seconds": seconds, "accuracy": accuracy, "warmup": warmup})
        print(
            f"seed {seed}: {accuracy:.4f} in {seconds:.1f} s (warm-up with compilation "
            f"{warmup:.1f} s)",
            flush=True,
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cifar10_airbench94.py")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", action="append", default=[], help="config key=value")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    root = args.workdir or tempfile.mkdtemp(prefix="time_to_accuracy_")
    jax.config.update("jax_compilation_cache_dir", os.path.join(root, "compile_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    rows = run(args.config, args.seeds, args.set, root)
    accuracies = [r["accuracy"] for r in rows]
    seconds = [r["seconds"] for r in rows]
    spread = statistics.stdev if len(rows) > 1 else lambda values: 0.0
    device = jax.devices()[0]
    print(f"{args.config} {' '.join(args.set)}")
    print(f"{jax.device_count()} x {device.device_kind} ({device.platform}), jax {jax.__version__}")
    print("| runs | accuracy mean | accuracy std | min | max | seconds mean | seconds std |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {len(rows)} | {statistics.mean(accuracies):.4f} | {spread(accuracies):.4f} | "
        f"{min(accuracies):.4f} | {max(accuracies):.4f} | {statistics.mean(seconds):.1f} | "
        f"{spread(seconds):.1f} |"
    )
    warmups = ", ".join(f"{r['warmup']:.1f}" for r in rows)
    print(f"warm-up runs (compiling): {warmups} s; workdirs in {root}")


if __name__ == "__main__":
    main()
