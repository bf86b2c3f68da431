"""Training throughput (images/s) of the data-parallel train step on synthetic batches.

Times the jitted step alone (a fixed uint8 batch already on the devices), so the numbers are
the rate at which training can consume images; the input pipeline is benchmarked separately.
Runs without TensorFlow.

    python benchmarks/train_throughput.py                      # all cases, this machine
    python benchmarks/train_throughput.py --cases resnet50 --batch_size 256 --steps 50
    python benchmarks/train_throughput.py --cases cnn resnet18 --features base ema drop_path accum4
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default  # noqa: E402
from imgcls import models, parallel  # noqa: E402
from imgcls.training import loop, optim, schedules, state  # noqa: E402

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
    "wrn28_10": (dict(name="wrn28_10"), (32, 32, 3), 10, 16, 512),
    "airbench94": (dict(name="airbench94"), (32, 32, 3), 10, 1024, 1024),
    # issue 28's CPU comparison: the airbench94 net at reduced widths
    "airbench94_small": (dict(name="airbench94", widths=(16, 64, 64)), (32, 32, 3), 10, 1024, 1024),
}
DEFAULT_CASES = ["cnn", "resnet18", "resnet50"]  # wrn28_10 (36.5M, CIFAR): --cases wrn28_10


# Training options whose cost on the step is measured against "base" (--features); each is a
# config change. drop_path needs a model with residual blocks (ResNets, WRN).
FEATURES = {
    "base": {},
    "ema": {"ema_decay": 0.999},
    "drop_path": {"model.drop_path_rate": 0.1},
    "accum4": {"grad_accum_steps": 4},
    "clip": {"optimizer.clip_norm": 1.0},
}


def _config(case: str, half_precision: bool, feature: str):
    model_config = CASES[case][0]
    config = default.get_config()
    config.model = default.ml_collections.ConfigDict(model_config)
    config.half_precision = half_precision
    config.dataset.mean, config.dataset.std = (0.5,), (0.25,)
    config.optimizer.name = "sgd"
    for key, value in FEATURES[feature].items():
        node, _, name = key.rpartition(".")
        (config[node] if node else config)[name] = value
    return config


def prepare(case: str, batch_size: int, half_precision: bool, feature: str = "base") -> dict:
    """The compiled step of `case` with `feature`, its state and a fixed batch on the devices."""
    _, shape, num_classes, _, _ = CASES[case]
    config = _config(case, half_precision, feature)
    mesh = parallel.create_mesh()
    parallel.check_batch_size(batch_size * int(config.grad_accum_steps), mesh)
    model = models.create_model(config.model, num_classes, half_precision)
    tx = optim.create_optimizer(
        config, schedules.create_learning_rate_schedule(config, 100, 10_000)
    )
    keep_ema = config.ema_decay > 0
    train_state = state.create_train_state(0, model, shape, tx, mesh, keep_ema=keep_ema)
    p_train, _ = loop.make_steps(config, num_classes, mesh)
    rng = np.random.default_rng(0)
    batch = parallel.global_batch(
        mesh,
        {
            "image": rng.integers(0, 256, (batch_size, *shape), dtype=np.uint8),
            "label": rng.integers(0, num_classes, (batch_size,), dtype=np.int32),
        },
    )
    t0 = time.perf_counter()
    train_state, metrics, _ = p_train(train_state, batch)
    jax.block_until_ready((train_state, metrics))
    compile_s = time.perf_counter() - t0
    train_state, metrics, _ = p_train(train_state, batch)  # one warm step after compilation
    jax.block_until_ready(train_state)
    return dict(
        step=p_train,
        state=train_state,
        batch=batch,
        compile_s=compile_s,
        params=models.count_params(train_state.params),
        devices=mesh.devices.size,
    )


def time_steps(prepared: dict, steps: int) -> float:
    """Seconds per step over `steps` steps (the state is carried on, as training does)."""
    p_train, train_state, batch = prepared["step"], prepared["state"], prepared["batch"]
    t0 = time.perf_counter()
    for _ in range(steps):
        train_state, metrics, _ = p_train(train_state, batch)
    jax.block_until_ready((train_state, metrics))
    prepared["state"] = train_state
    return (time.perf_counter() - t0) / steps


def benchmark(case: str, batch_size: int, steps: int, half_precision: bool) -> dict:
    prepared = prepare(case, batch_size, half_precision)
    step_s = time_steps(prepared, steps)
    _, shape, _, _, _ = CASES[case]
    return dict(
        model=case,
        input="x".join(map(str, shape)),
        batch=batch_size,
        devices=prepared["devices"],
        dtype="bfloat16" if half_precision else "float32",
        compile_s=prepared["compile_s"],
        step_ms=1000 * step_s,
        images_per_s=batch_size / step_s,
        params=prepared["params"],
    )


def compare_features(case, batch_size, steps, half_precision, features, rounds) -> list[dict]:
    """Median step time of each feature, timed in `rounds` rounds that alternate between the
    features (so load from other processes on a shared machine hits them alike), and its
    ratio to base's."""
    fields = models.model_fields(CASES[case][0]["name"])
    usable = [f for f in features if f != "drop_path" or "drop_path_rate" in fields]
    prepared = {f: prepare(case, batch_size, half_precision, f) for f in usable}
    times = {f: [] for f in usable}
    for _ in range(rounds):
        for feature in usable:
            times[feature].append(time_steps(prepared[feature], steps))
    medians = {f: float(np.median(t)) for f, t in times.items()}
    base = medians.get("base")
    return [
        dict(
            model=case,
            feature=f,
            batch=batch_size,
            compile_s=prepared[f]["compile_s"],
            step_ms=1000 * medians[f],
            spread_ms=1000 * (max(times[f]) - min(times[f])),
            vs_base=medians[f] / base if base else float("nan"),
        )
        for f in usable
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, choices=list(CASES))
    parser.add_argument("--batch_size", type=int, default=0, help="0: a per-case default")
    parser.add_argument("--steps", type=int, default=0, help="timed steps; 0: a default")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument(
        "--features",
        nargs="+",
        default=None,
        choices=list(FEATURES),
        help="compare the step with these training options (e.g. base ema drop_path accum4)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="--features: alternating rounds")
    args = parser.parse_args()
    if args.features:
        _compare(args)
        return
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
        slow = case in ("resnet50", "wrn28_10")
        steps = args.steps or (5 if on_cpu and slow else 20 if on_cpu else 50)
        for dtype in args.dtypes:
            r = benchmark(case, batch, steps, dtype == "bfloat16")
            print(
                f"| {r['model']} | {r['input']} | {r['batch']} | {r['devices']} | "
                f"{r['dtype']} | {r['params']:,} | {r['compile_s']:.1f} | "
                f"{r['step_ms']:.1f} | {r['images_per_s']:,.0f} |",
                flush=True,
            )


def _compare(args):
    on_cpu = jax.default_backend() == "cpu"
    print(
        f"backend={jax.default_backend()} devices={jax.device_count()} "
        f"({jax.devices()[0].device_kind}) jax={jax.__version__}"
    )
    header = ("model", "feature", "batch", "compile_s", "step_ms (median)", "spread_ms", "vs base")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case in args.cases:
        cpu_batch, acc_batch = CASES[case][3:]
        batch = args.batch_size or (cpu_batch if on_cpu else acc_batch)
        steps = args.steps or (2 if on_cpu and case != "cnn" else 20)
        for r in compare_features(case, batch, steps, False, args.features, args.rounds):
            print(
                f"| {r['model']} | {r['feature']} | {r['batch']} | {r['compile_s']:.1f} | "
                f"{r['step_ms']:.1f} | {r['spread_ms']:.1f} | {r['vs_base']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
