"""Training throughput (images/s) of the data-parallel train step on synthetic batches.

Times the jitted step alone (a fixed uint8 batch already on the devices), so the numbers are
the rate at which training can consume images; the input pipeline is benchmarked separately.
Runs without TensorFlow.

    python benchmarks/train_throughput.py                      # all cases, this machine
    python benchmarks/train_throughput.py --cases resnet50 --batch_size 256 --steps 50
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default  # noqa: E402
from imgcls import models, optim, parallel, state, train  # noqa: E402

# name: (model config, input shape, classes, CPU batch, accelerator batch)
CASES = {
    "cnn": (
        dict(name="cnn", features=(32, 64), dense_features=128, dropout_rate=0.3),
        (8, 8, 1),
        10,
        256,
        1024,
    ),
    "resnet18": (dict(name="resnet18", stem="small"), (32, 32, 3), 10, 64, 512),
    "resnet50": (dict(name="resnet50"), (224, 224, 3), 1000, 16, 256),
}


def benchmark(case: str, batch_size: int, steps: int, half_precision: bool) -> dict:
    model_config, shape, num_classes, _, _ = CASES[case]
    config = default.get_config()
    config.model = default.ml_collections.ConfigDict(model_config)
    config.half_precision = half_precision
    config.dataset.mean, config.dataset.std = (0.5,), (0.25,)
    config.optimizer.name = "sgd"
    mesh = parallel.create_mesh()
    parallel.check_batch_size(batch_size, mesh)
    model = models.create_model(config.model, num_classes, half_precision)
    tx = optim.create_optimizer(config, optim.create_learning_rate_schedule(config, 100, 10_000))
    state = state.create_train_state(0, model, shape, tx, mesh)
    p_train, _ = train.make_steps(config, num_classes, mesh)
    rng = np.random.default_rng(0)
    batch = parallel.global_batch(
        mesh,
        {
            "image": rng.integers(0, 256, (batch_size, *shape), dtype=np.uint8),
            "label": rng.integers(0, num_classes, (batch_size,), dtype=np.int32),
        },
    )
    t0 = time.perf_counter()
    state, metrics, _ = p_train(state, batch)
    jax.block_until_ready((state, metrics))
    compile_s = time.perf_counter() - t0
    state, metrics, _ = p_train(state, batch)  # one warm step after compilation
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics, _ = p_train(state, batch)
    jax.block_until_ready((state, metrics))
    step_s = (time.perf_counter() - t0) / steps
    return dict(
        model=case,
        input="x".join(map(str, shape)),
        batch=batch_size,
        devices=mesh.devices.size,
        dtype="bfloat16" if half_precision else "float32",
        compile_s=compile_s,
        step_ms=1000 * step_s,
        images_per_s=batch_size / step_s,
        params=models.count_params(state.params),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batch_size", type=int, default=0, help="0: a per-case default")
    parser.add_argument("--steps", type=int, default=0, help="timed steps; 0: a default")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    args = parser.parse_args()
    on_cpu = jax.default_backend() == "cpu"
    print(
        f"backend={jax.default_backend()} devices={jax.device_count()} "
        f"({jax.devices()[0].device_kind}) jax={jax.__version__}"
    )
    header = (
        "model",
        "input",
        "batch",
        "devices",
        "dtype",
        "params",
        "compile_s",
        "step_ms",
        "images/s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case in args.cases:
        cpu_batch, acc_batch = CASES[case][3:]
        batch = args.batch_size or (cpu_batch if on_cpu else acc_batch)
        steps = args.steps or (5 if on_cpu and case == "resnet50" else 20 if on_cpu else 50)
        for dtype in args.dtypes:
            r = benchmark(case, batch, steps, dtype == "bfloat16")
            print(
                f"| {r['model']} | {r['input']} | {r['batch']} | {r['devices']} | "
                f"{r['dtype']} | {r['params']:,} | {r['compile_s']:.1f} | "
                f"{r['step_ms']:.1f} | {r['images_per_s']:,.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
