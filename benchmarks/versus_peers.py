"""imgcls's train step against the tools people would use instead, side by side on this machine.

Each (case, framework) runs in its own fresh process on random batches already in memory:
`--rounds` rounds, the frameworks in alternating order, then the median images/s of each and
imgcls's ratio to each peer. The processes never run at the same time.

    python benchmarks/versus_peers.py                       # cnn vs Keras (TF and JAX backends)
    python benchmarks/versus_peers.py --cases resnet18 resnet50 \
        --flax_example /tmp/flax/examples/imagenet

- cnn: the default `cnn` (conv 32, 64; dense 128; dropout 0.3) at 28x28x1, batch 64, AdamW;
  peers: Keras 3 with the TensorFlow backend and with the JAX backend, the same layers, `fit`.
- resnet18: ResNet-18 v1.5 (ImageNet stem) at 128x128, batch 32, 1000 classes, SGD + Nesterov;
  peer: flax examples/imagenet `train_step` under `jax.pmap`.
- resnet50: ResNet-50 v1.5 at 224x224, batch 16, 1000 classes, SGD + Nesterov; the same peer.

--xla_options adds the other half of the XLA:CPU setting that imgcls compiles with
(imgcls.parallel.CPU_COMPILER_OPTIONS: convolutions by XLA, not YNNPACK): imgcls with XLA's
defaults ("imgcls/xla-defaults"), and each JAX peer with imgcls's setting ("<peer>/imgcls-xla",
given as the equivalent XLA_FLAGS), so the ratio shows what the setting alone is worth.

The flax example is not part of imgcls: fetch google/flax (e.g. `git clone`) and give its
`examples/imagenet` folder with --flax_example. Keras comes with TensorFlow.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # configs/ and imgcls, as under main.py
from imgcls.training import schedules  # noqa: E402

CASES = {
    # name: (image shape, batch, classes, peers)
    "cnn": ((28, 28, 1), 64, 10, ("keras-tf", "keras-jax")),
    "resnet18": ((128, 128, 3), 32, 1000, ("flax-example",)),
    "resnet50": ((224, 224, 3), 16, 1000, ("flax-example",)),
}
STEPS = {"cnn": 200, "resnet18": 6, "resnet50": 3}  # timed steps per process (after warm-up)
JAX_PEERS = ("keras-jax", "flax-example")
# imgcls.parallel.CPU_COMPILER_OPTIONS as a flag (default fusion types minus convolutions)
IMGCLS_XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def _batch(case, dtype):
    import numpy as np

    shape, batch, classes, _ = CASES[case]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
    if dtype != "uint8":
        images = ((images.astype(np.float32) / 255.0) - 0.5) / 0.25
    return images, rng.integers(0, classes, (batch,), dtype=np.int32)


def _timed(step, steps, block):
    """images/s of `steps` calls of step() after two warm-up calls (compilation)."""
    for _ in range(2):
        block(step())
    start = time.perf_counter()
    for _ in range(steps):
        out = step()
    block(out)
    return steps / (time.perf_counter() - start)


def run_imgcls(case, steps, xla_defaults=False):
    import jax
    import ml_collections

    from configs import default
    from imgcls import models, parallel
    from imgcls.training import optim, state
    from imgcls.training import step as train_step

    if xla_defaults:
        parallel.CPU_COMPILER_OPTIONS = {}

    shape, batch, classes, _ = CASES[case]
    config = default.get_config()
    if case == "cnn":
        config.optimizer.name = "adamw"
    else:
        config.model = ml_collections.ConfigDict({"name": case, "stem": "imagenet"})
        config.optimizer.name = "sgd"
        config.optimizer.learning_rate = 0.1
    mesh = parallel.create_mesh()
    model = models.create_model(config.model, classes)
    tx = optim.create_optimizer(
        config, schedules.create_learning_rate_schedule(config, 100, 10_000)
    )
    holder = {"state": state.create_train_state(0, model, shape, tx, mesh)}
    p_train = train_step.make_train_step(config, classes, mesh)
    images, labels = _batch(case, "uint8")
    global_batch = parallel.global_batch(mesh, {"image": images, "label": labels})

    def step():
        holder["state"], metrics, _ = p_train(holder["state"], global_batch)
        return metrics

    return batch * _timed(step, steps, jax.block_until_ready)


def run_keras(case, steps, backend):
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    shape, batch, classes, _ = CASES[case]
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(shape),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2, padding="same"),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2, padding="same"),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(classes),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(3e-3, weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    images, labels = _batch(case, "float32")
    x, y = np.tile(images, (steps, 1, 1, 1)), np.tile(labels, steps)
    model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, epochs=1, verbose=0)  # compile
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    return steps * batch / (time.perf_counter() - start)


def run_flax_example(case, steps, example_dir):
    import functools

    import jax
    import jax.numpy as jnp
    import ml_collections
    import optax

    sys.path.insert(0, example_dir)
    import models as example_models  # the example's own modules
    import train as example_train

    shape, batch, classes, _ = CASES[case]
    model_cls = {"resnet18": example_models.ResNet18, "resnet50": example_models.ResNet50}[case]
    model = example_train.create_model(model_cls=model_cls, half_precision=False)
    config = ml_collections.ConfigDict({"momentum": 0.9, "half_precision": False})
    learning_rate_fn = optax.constant_schedule(0.1)
    state = example_train.create_train_state(
        jax.random.key(0), config, model, shape[0], learning_rate_fn
    )
    state = jax.tree.map(lambda x: jnp.asarray(x)[None], state)  # one device: leading axis 1
    p_train_step = jax.pmap(
        functools.partial(example_train.train_step, learning_rate_fn=learning_rate_fn),
        axis_name="batch",
    )
    images, labels = _batch(case, "float32")
    device_batch = {"image": jnp.asarray(images)[None], "label": jnp.asarray(labels)[None]}
    holder = {"state": state}

    def step():
        holder["state"], metrics = p_train_step(holder["state"], device_batch)
        return metrics

    return batch * _timed(step, steps, jax.block_until_ready)


def worker(case, framework, steps, example_dir):
    framework, _, variant = framework.partition("/")
    if framework == "imgcls":
        return run_imgcls(case, steps, xla_defaults=variant == "xla-defaults")
    if framework.startswith("keras-"):
        return run_keras(case, steps, framework.split("-")[1].replace("tf", "tensorflow"))
    return run_flax_example(case, steps, example_dir)


def measure(case, framework, steps, example_dir):
    """images/s of one fresh worker process."""
    command = [sys.executable, __file__, "--worker", f"{case}:{framework}", "--steps", str(steps)]
    if example_dir:
        command += ["--flax_example", example_dir]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    if framework.endswith("/imgcls-xla"):
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {IMGCLS_XLA_FLAG}".strip()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{case}:{framework} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["images_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["cnn"], choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--flax_example", default="", help="flax's examples/imagenet folder")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per process")
    parser.add_argument(
        "--xla_options",
        action="store_true",
        help="also imgcls with XLA's defaults, and JAX peers with imgcls's XLA:CPU options",
    )
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case, framework = args.worker.split(":")
        rate = worker(case, framework, args.steps, args.flax_example)
        print(json.dumps({"images_per_s": rate}))
        return
    import jax

    print(f"{os.cpu_count()} CPUs, jax {jax.__version__} ({jax.default_backend()})")
    print("| case | framework | images/s (median) | each round | imgcls / framework |")
    print("|---|---|---|---|---|")
    for case in args.cases:
        peers = list(CASES[case][3])
        if "flax-example" in peers and not args.flax_example:
            raise SystemExit(f"--cases {case} needs --flax_example=<flax>/examples/imagenet")
        frameworks = ["imgcls", *peers]
        if args.xla_options:
            frameworks += ["imgcls/xla-defaults"]
            frameworks += [f"{p}/imgcls-xla" for p in peers if p in JAX_PEERS]
        rates = {f: [] for f in frameworks}
        for r in range(args.rounds):
            for framework in frameworks if r % 2 == 0 else frameworks[::-1]:
                steps = args.steps or STEPS[case]
                rates[framework].append(measure(case, framework, steps, args.flax_example))
        ours = statistics.median(rates["imgcls"])
        for framework in frameworks:
            rate = statistics.median(rates[framework])
            ratio = "" if framework == "imgcls" else f"{ours / rate:.2f}x"
            each = ", ".join(f"{r:,.1f}" for r in rates[framework])
            print(f"| {case} | {framework} | {rate:,.1f} | {each} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
