"""Wall time from start to final accuracy over seeds, as the airbench paper counts it.

Each seed's time runs from calling train.train_and_evaluate to its final evaluation (the
config's test-time augmentation included): compile, the data-dependent initialisation and
loading the split onto the devices count; preparing the dataset the first time does not (it is
done before the clock starts). The first run compiles; later runs read the compiled steps from
JAX's persistent compilation cache (a temporary folder), as the reference's timed runs follow
a warm-up run. Prints each run and the mean and spread of accuracy and time.

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

from imgcls import config_files, data, train  # noqa: E402


def run(config_path, seeds, assignments, root) -> list[dict]:
    """[{'seed', 'seconds', 'accuracy', 'steps'}] of one training per seed (after a warm-up
    run of the first seed, reported as seed None, that compiles)."""
    rows = []
    for seed in [None, *seeds]:
        config = config_files.load(config_path)
        for assignment in assignments:
            config_files.set_value(config, assignment)
        config.seed = seeds[0] if seed is None else seed
        config.final_report = False
        config.checkpoint_every_steps = 10**9  # the final step is saved, nothing else
        if seed is None:
            data.get_dataset_info(config)  # prepares the dataset: not timed
        workdir = os.path.join(root, "warmup" if seed is None else f"seed{seed}")
        start = time.perf_counter()
        result = train.train_and_evaluate(config, workdir)
        seconds = time.perf_counter() - start
        rows.append({"seed": seed, "seconds": seconds, "accuracy": result["eval_accuracy"]})
        label = "warm-up (compiles)" if seed is None else f"seed {seed}"
        print(f"{label}: {result['eval_accuracy']:.4f} in {seconds:.1f} s", flush=True)
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
    timed = [r for r in rows if r["seed"] is not None]
    accuracies = [r["accuracy"] for r in timed]
    seconds = [r["seconds"] for r in timed]
    spread = statistics.stdev if len(timed) > 1 else lambda values: 0.0
    device = jax.devices()[0]
    print(f"{args.config} {' '.join(args.set)}")
    print(f"{jax.device_count()} x {device.device_kind} ({device.platform}), jax {jax.__version__}")
    print("| runs | accuracy mean | accuracy std | min | max | seconds mean | seconds std |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {len(timed)} | {statistics.mean(accuracies):.4f} | {spread(accuracies):.4f} | "
        f"{min(accuracies):.4f} | {max(accuracies):.4f} | {statistics.mean(seconds):.1f} | "
        f"{spread(seconds):.1f} |"
    )
    print(f"warm-up run (compiling): {rows[0]['seconds']:.1f} s; workdirs in {root}")


if __name__ == "__main__":
    main()
