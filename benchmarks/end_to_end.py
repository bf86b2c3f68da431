"""End-to-end training images/s next to the step alone: what the input pipeline costs.

For a config (the pipeline it resolves to, 'auto' by default), one process alternates rounds
of steps (`--steps`, or more so that a round lasts `--seconds`) that take each batch from the
train iterator (end to end: reading, augmentation, host-to-device copy, the step) with rounds
of the same step on one batch already on the devices (step only). Prints the medians, each
round's rates and the input's share of the time.

    python benchmarks/end_to_end.py                                  # digits, the default cnn
    python benchmarks/end_to_end.py --config=configs/folder_cnn.py \\
        --set dataset.path=/data/cifar10 --set dataset.data_dir=/tmp/tfds_cifar
"""

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from imgcls import data, parallel  # noqa: E402
from imgcls.config import files as config_files  # noqa: E402
from imgcls.config import resolve  # noqa: E402
from imgcls.training import loop, state  # noqa: E402


def measure(config, steps: int, rounds: int, seconds: float = 0.0) -> dict:
    """{'pipeline', 'batch', 'end_to_end', 'step_only'} (images/s, medians over rounds)."""
    config, info, _ = resolve.resolve_run(config)
    config = data.resolve_pipeline(config, info)
    mesh = parallel.create_mesh()
    train_state, _, total = state.initial_state(config, info, mesh)
    p_train, _ = loop.make_steps(config, info.num_classes, mesh, total_steps=total)
    batches = data.create_train_iterator(config, info, mesh=mesh)

    def next_batch():
        return parallel.global_batch(mesh, next(batches))

    fixed = next_batch()
    train_state, metrics, _ = p_train(train_state, fixed)  # compiles
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(20):
        train_state, metrics, _ = p_train(train_state, fixed)
    jax.block_until_ready(metrics)
    steps = max(steps, math.ceil(seconds / ((time.perf_counter() - start) / 20)))
    rates = {"end_to_end": [], "step_only": []}
    for _ in range(rounds):
        for kind in rates:
            start = time.perf_counter()
            for _ in range(steps):
                batch = next_batch() if kind == "end_to_end" else fixed
                train_state, metrics, _ = p_train(train_state, batch)
            jax.block_until_ready((train_state, metrics))
            rates[kind].append(steps * config.batch_size / (time.perf_counter() - start))
    return {
        "pipeline": config.dataset.pipeline,
        "batch": config.batch_size,
        "steps": steps,
        **{kind: statistics.median(values) for kind, values in rates.items()},
        "rounds": rates,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--set", action="append", default=[], help="config key=value")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="least time per round")
    args = parser.parse_args()
    config = config_files.load(args.config)
    for assignment in args.set:
        config_files.set_value(config, assignment)
    result = measure(config, args.steps, args.rounds, args.seconds)
    share = 1 - result["end_to_end"] / result["step_only"]
    print(
        f"{args.config} {' '.join(args.set)}; {jax.device_count()} {jax.devices()[0].platform}; "
        f"{args.rounds} rounds of {result['steps']} steps each way"
    )
    print("| pipeline | batch | end to end (images/s) | step only | input's share of the time |")
    print("|---|---|---|---|---|")
    print(
        f"| {result['pipeline']} | {result['batch']} | {result['end_to_end']:,.0f} | "
        f"{result['step_only']:,.0f} | {share:.1%} |"
    )
    for kind, values in result["rounds"].items():
        print(f"{kind} rounds: {', '.join(f'{v:,.0f}' for v in values)}")


if __name__ == "__main__":
    main()
