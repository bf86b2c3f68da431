"""The train step's options: the moving average of the weights and gradient accumulation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, run_python
from jax.sharding import PartitionSpec as P

from imgcls import models, parallel
from imgcls.config import check as config_check
from imgcls.training import ema, optim, schedules, state
from imgcls.training import step as train_step

NO_BN_MODEL = {"name": "cnn", "features": (4,), "dense_features": 8, "dropout_rate": 0.0}


def tiny_config(**options):
    config = load_config()
    config.model = NO_BN_MODEL
    config.optimizer.name = "sgd"
    config.optimizer.momentum = 0.0
    config.optimizer.learning_rate = 0.1
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_epochs = 0.0
    for key, value in options.items():
        config[key] = value
    return config


def random_state(config, model, shape, mesh):
    """A TrainState (EmaTrainState with config.ema_decay) of numpy-drawn variables, replicated:
    as create_train_state's, without compiling the initialisers (seconds per model on CPU)."""
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))

    def draw(path, leaf):
        if jax.tree_util.keystr(path).endswith("['var']"):
            return np.ones(leaf.shape, np.float32)
        return (0.1 * rng.normal(size=leaf.shape)).astype(np.float32)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    tx = optim.create_optimizer(config, schedules.create_learning_rate_schedule(config, 10, 100))
    fields = dict(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
    )
    if ema.enabled(config):
        trained = {"params": fields["params"], "batch_stats": fields["batch_stats"]}
        s = state.EmaTrainState.create(**fields, ema=ema.initial(trained))
    else:
        s = state.TrainState.create(**fields)
    return jax.device_put(s, parallel.replicated(mesh))


def setup(config, num_classes=10, batch=32, shape=(8, 8, 1)):
    mesh = parallel.create_mesh()
    model = models.create_model(config.model, num_classes)
    s = random_state(config, model, shape, mesh)
    step = train_step.make_train_step(config, num_classes, mesh)
    rng = np.random.default_rng(0)

    def batch_of(seed):
        rng = np.random.default_rng(seed)
        return parallel.global_batch(
            mesh,
            {
                "image": rng.integers(0, 256, (batch, *shape), dtype=np.uint8),
                "label": rng.integers(0, num_classes, (batch,), dtype=np.int32),
            },
        )

    del rng
    return s, step, batch_of


def host(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def test_ema_after_k_steps_is_the_closed_form_average_of_the_weights():
    decay, k = 0.8, 5
    config = tiny_config(ema_decay=decay)
    s, step, batch_of = setup(config)
    history = [host(s.params)]
    for i in range(k):
        s, _, finite = step(s, batch_of(i))
        assert bool(finite)
        history.append(host(s.params))
    # ema_k = d^k p_0 + sum_{i=1..k} (1 - d) d^(k-i) p_i
    expected = jax.tree.map(
        lambda *p: (
            decay**k * p[0] + sum((1 - decay) * decay ** (k - i) * p[i] for i in range(1, k + 1))
        ),
        *history,
    )
    jax.tree.map(
        lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7),
        host(s.ema["params"]),
        expected,
    )
    assert not np.allclose(host(s.ema["params"])["head"]["kernel"], history[-1]["head"]["kernel"])

    # a step that is not finite leaves the average alone, like the weights
    before = host(s.ema)
    broken = s.replace(params=jax.tree.map(lambda p: p * jnp.nan, s.params))
    after, _, finite = step(broken, batch_of(99))
    assert not bool(finite)
    jax.tree.map(np.testing.assert_array_equal, host(after.ema), before)


def test_ema_warmup_decay():
    assert float(ema.decay_at(0, 0.999, 0.0)) == pytest.approx(0.999)
    assert float(ema.decay_at(0, 0.999, 0.75)) == 0.0  # the first average is the weights
    assert float(ema.decay_at(15, 0.999, 0.75)) == pytest.approx(1 - 16**-0.75)  # 0.875
    assert float(ema.decay_at(10**7, 0.999, 0.75)) == pytest.approx(0.999)


def test_four_micro_batches_equal_one_step_of_the_whole_batch():
    """Without BatchNorm (and dropout), accumulating 4 micro-batch gradients is one step of the
    whole batch, up to rounding: the same update and the same step metrics."""
    results = {}
    for accum in (1, 4):
        s, step, batch_of = setup(tiny_config(grad_accum_steps=accum))
        s, metrics, _ = step(s, batch_of(0))
        results[accum] = (host(s.params), {k: float(v) for k, v in metrics.compute().items()})
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), results[1][0], results[4][0]
    )
    for name, value in results[1][1].items():
        assert results[4][1][name] == pytest.approx(value, abs=1e-6)


EIGHT_DEVICES = """
import sys, json
sys.path.insert(0, 'tests')
import jax, numpy as np
from test_train_step import setup, tiny_config, host
out = {'devices': jax.device_count()}
for name, model in (('cnn', None), ('resnet', dict(name='resnet18', num_filters=2,
                                                   stem='small', stage_sizes=(1,)))):
    params, stats = {}, {}
    for accum in (1, 4):
        config = tiny_config(grad_accum_steps=accum)
        if model:
            config.model = model
        s, step, batch_of = setup(config, batch=32, shape=(8, 8, 3) if model else (8, 8, 1))
        s, _, finite = step(s, batch_of(0))
        assert bool(finite)
        leaves = [np.ravel(x) for x in jax.tree.leaves(host(s.params))]
        params[accum] = np.concatenate(leaves)
        stats[accum] = np.concatenate(
            [np.ravel(x) for x in jax.tree.leaves(host(s.batch_stats))] or [np.zeros(0)]
        )
    out[name] = {
        'params': float(np.abs(params[1] - params[4]).max()),
        'stats': float(np.abs(stats[1] - stats[4]).max()) if stats[1].size else 0.0,
    }
print(json.dumps(out))
"""


def test_accumulation_on_eight_devices():
    """Per device, the shard is cut into micro-batches: on 8 simulated devices a batch of 32
    (4 per device, micro-batches of 1) still equals the full step without BatchNorm, while a
    BatchNorm model normalises each micro-batch by its own statistics (so it differs)."""
    proc = run_python(
        ["-c", EIGHT_DEVICES], {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    assert out["cnn"]["params"] < 1e-6
    assert out["resnet"]["stats"] > 1e-4  # per-micro-batch BatchNorm statistics


def test_batch_that_cannot_be_cut_into_micro_batches_is_refused():
    mesh = parallel.create_mesh()
    config = tiny_config(grad_accum_steps=3)
    with pytest.raises(ValueError, match="grad_accum_steps=3 equal micro-batches.*multiple of 3"):
        config_check.check_with_data(config, type("Info", (), {"image_shape": (8, 8, 1)}), mesh)


NHWC = ("NHWC", "HWIO", "NHWC")


def _convolutions_in_ynnpack(compiled_text: str) -> int:
    """How many of a compiled CPU program's convolutions run as YNNPACK fusions."""
    return sum(
        "__ynn_fusion" in line and "conv_general_dilated" in line
        for line in compiled_text.splitlines()
    )


def test_cpu_steps_compile_their_convolutions_with_xla_not_ynnpack():
    """parallel.CPU_COMPILER_OPTIONS reach what data_parallel compiles: its convolutions are
    XLA's multi-threaded ones (1.35x the cnn's step on 2 cores), with the same values as XLA's
    default (YNNPACK) convolutions, which the plain jit of the same step still uses."""
    mesh = parallel.create_mesh(jax.devices()[:1])
    images = jnp.asarray(np.random.default_rng(0).normal(size=(4, 12, 12, 16)), jnp.float32)
    kernel = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 16, 32)), jnp.float32)

    def kernel_grad(x, k):
        def loss(k):
            y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
            return jnp.sum(jax.nn.relu(y) ** 2)

        return jax.grad(loss)(k)

    ours = parallel.data_parallel(kernel_grad, mesh, (P(parallel.AXIS), P()), P())
    assert parallel.compiler_options(mesh.devices) == parallel.CPU_COMPILER_OPTIONS
    ours_text = ours.lower(images, kernel).compile().as_text()
    default_text = jax.jit(kernel_grad).lower(images, kernel).compile().as_text()
    assert _convolutions_in_ynnpack(default_text) > 0  # what the options change
    assert _convolutions_in_ynnpack(ours_text) == 0
    expected = jax.jit(kernel_grad)(images, kernel)  # sums of ~1e3: float32 order differs
    np.testing.assert_allclose(ours(images, kernel), expected, atol=1e-6 * np.abs(expected).max())


def test_compiler_options_a_jaxlib_refuses_fall_back_to_xla_defaults(monkeypatch):
    monkeypatch.setattr(parallel, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option": "1"})
    assert parallel._cpu_compiler_options.__wrapped__() == {}
