"""How long the training loop keeps the device waiting: the real loop against a bare step chain.

For each batch size, one process runs the real loop (`train_and_evaluate` of configs/default.py,
the digits cnn, with evaluation, checkpoints and the report moved out of the way) and reads its
rate from the `steps_per_sec` it logs (every log line after the first, so compilation and the
first steps are left out); then it chains the same jitted train step on one batch already on
the device (`block_until_ready` only at the end), which is what the device alone can do.
Alternating rounds; medians. The last lines are one per batch size:

    batch 8: loop/bare 0.76 (host overhead 176 us/step)

i.e. the loop's steps/s over the chain's, and the time per step the device waits on the host.
Issue 27's goal: at least 0.95 at batch 8, no worse at 64.

    python benchmarks/loop_overhead.py [--batch_sizes 8 64] [--steps 3000] [--rounds 3]
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
from imgcls import data, parallel  # noqa: E402
from imgcls.config import files as config_files  # noqa: E402
from imgcls.config import resolve  # noqa: E402
from imgcls.run import workdir as workdir_files  # noqa: E402
from imgcls.training import loop, state  # noqa: E402

LOG_EVERY = 250  # steps per logged rate


def _config(batch: int, steps: int):
    config = config_files.load("configs/default.py")
    config.batch_size = batch
    config.num_train_steps = steps
    config.log_every_steps = LOG_EVERY
    config.eval_every_epochs = 10_000.0  # no evaluation inside the run
    config.checkpoint_every_steps = 10 * steps  # the one checkpoint at the end
    config.final_report = False
    return config


def loop_rate(batch: int, steps: int) -> float:
    """Median steps/s of the real loop's log lines after the first."""
    with tempfile.TemporaryDirectory(prefix="loop_overhead_") as workdir:
        imgcls.train_and_evaluate(_config(batch, steps), workdir)
        rates = [
            r["steps_per_sec"] for r in workdir_files.read_metrics(workdir) if "steps_per_sec" in r
        ]
    return statistics.median(rates[1:])


def bare_rate(batch: int, steps: int) -> float:
    """Steps/s of the same train step chained on one device-resident batch."""
    config, info, _ = resolve.resolve_run(_config(batch, steps))
    config = data.resolve_pipeline(config, info, log=False)
    mesh = parallel.create_mesh()
    train_state, _, total = state.initial_state(config, info, mesh)
    p_train, _ = loop.make_steps(config, info.num_classes, mesh, total_steps=total)
    batch_arrays = parallel.global_batch(
        mesh, next(data.create_train_iterator(config, info, mesh=mesh))
    )
    train_state, metrics, _ = p_train(train_state, batch_arrays)  # compiles
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        train_state, metrics, _ = p_train(train_state, batch_arrays)
    jax.block_until_ready((train_state, metrics))
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--steps", type=int, default=3000, help="steps per loop run and chain")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{jax.device_count()} {jax.devices()[0].platform} device(s); {args.rounds} rounds")
    summary = []
    for batch in args.batch_sizes:
        rates = {"loop": [], "bare": []}
        for _ in range(args.rounds):
            rates["loop"].append(loop_rate(batch, args.steps))
            rates["bare"].append(bare_rate(batch, args.steps))
        for kind, values in rates.items():
            shown = ", ".join(f"{v:,.0f}" for v in values)
            print(f"batch {batch} {kind}: {shown} steps/s")
        looped, bare = statistics.median(rates["loop"]), statistics.median(rates["bare"])
        waited = (1 / looped - 1 / bare) * 1e6  # microseconds per step
        ratio = looped / bare
        summary.append(f"batch {batch}: loop/bare {ratio:.2f} (host overhead {waited:.0f} us/step)")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
