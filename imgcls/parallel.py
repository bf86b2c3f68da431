"""Data parallelism over a 1-D `('data',)` device mesh.

Steps are written per device, pmap-style: each sees its shard of the batch and reduces
with named-axis collectives over `'data'`. `data_parallel` runs such a step as
`jax.jit(jax.shard_map(...))`, which is what `jax.pmap` lowers to since JAX 0.8; the same
code runs on one CPU, many devices, and many hosts (after `jax.distributed.initialize()`).
"""

import functools

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"

# XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default, which barely uses a second
# core: on 2 cores the train steps of the cnn, resnet18 and resnet50 ran 1.35x, 1.19x and 1.39x
# faster with XLA's own multi-threaded (Eigen) convolutions (benchmarks/versus_peers.py
# --xla_options; benchmarks/results.md). Dots and reductions stay with YNNPACK, as by default.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
    "LIBRARY_FUSION_TYPE_REDUCE"
}


def create_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices of all processes (or the ones given)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


@functools.cache
def _cpu_compiler_options() -> dict:
    """CPU_COMPILER_OPTIONS if this jaxlib accepts them (a later one may rename the option:
    then XLA's defaults, with a warning), else {}."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS)(np.float32(0))
    except Exception as error:  # jaxlib's error types vary across versions
        logging.warning(
            "XLA:CPU options %s not taken (%s); using XLA's defaults.",
            CPU_COMPILER_OPTIONS,
            str(error).splitlines()[0],
        )
        return {}
    return dict(CPU_COMPILER_OPTIONS)


def compiler_options(devices=None) -> dict:
    """The XLA options imgcls compiles its steps with on these devices (default: the default
    backend's): CPU_COMPILER_OPTIONS on CPUs, none elsewhere."""
    platform = np.ravel(devices)[0].platform if devices is not None else jax.default_backend()
    return _cpu_compiler_options() if platform == "cpu" else {}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "config.batch_size") -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"{what}={batch_size} is not divisible by the {n} devices of the mesh; "
            f"use a multiple of {n}."
        )


def global_batch(mesh: Mesh, local_batch):
    """Assembles each process's host-local numpy batch into one global array sharded on data.

    Global jax.Arrays (from the device-resident pipeline) pass through unchanged.
    """
    sharding = batch_sharded(mesh)

    def assemble(x):
        if isinstance(x, jax.Array):
            return x
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(assemble, local_batch)


def data_parallel(step, mesh: Mesh, in_specs, out_specs, donate_argnums=()):
    """Runs a per-device step (the body one would `pmap`) over the mesh.

    `check_vma=False` keeps pmap's semantics: gradients of replicated parameters stay
    per-device until the step reduces them with `lax.pmean(grads, 'data')` itself.
    """
    sharded = jax.shard_map(
        step, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )
    return jax.jit(
        sharded, donate_argnums=donate_argnums, compiler_options=compiler_options(mesh.devices)
    )


def replicate(tree, mesh: Mesh):
    """Host arrays, the same in every process, as global arrays replicated over the mesh."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)
