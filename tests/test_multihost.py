"""Several hosts: 2 processes x 2 CPU devices (jax.distributed over gloo) equal 1 x 4 devices."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
from conftest import ROOT, run_python
from test_train import DEVICE_RUN, read_jsonl

DISTRIBUTED = """
import sys, jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(sys.argv.pop(1), num_processes=2, process_id=int(sys.argv.pop(1)))
"""


# The reference: one process whose global batches are host 0's and host 1's streams side by
# side, which is what 2 processes x 2 devices assemble with make_array_from_process_local_data.
TWO_HOST_DATA = """
import numpy as np
import imgcls.data
from imgcls.data import batching
real_iterator = imgcls.data.create_train_iterator

def as_host(i, make):
    saved = batching.process_index_and_count
    batching.process_index_and_count = lambda: (i, 2)
    try:
        return make()
    finally:
        batching.process_index_and_count = saved

def two_host_stream(config, info, start_step=0, mesh=None):
    hosts = [as_host(i, lambda: real_iterator(config, info, start_step)) for i in range(2)]
    while True:
        batches = [next(h) for h in hosts]
        yield {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

imgcls.data.create_train_iterator = two_host_stream
"""


# After training, every process takes part in evaluating the checkpoint; process 0 writes it.
EVALUATE = """
from imgcls.evaluation import evaluate
evaluate.evaluate_checkpoint(sys.argv[2])
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(data_dir, tmp_path):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    single = str(tmp_path / "single")
    proc = run_python(["-c", TWO_HOST_DATA + DEVICE_RUN, data_dir, single], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = json.loads(proc.stdout.strip().splitlines()[-1])

    multi = str(tmp_path / "multi")
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                DISTRIBUTED + DEVICE_RUN + EVALUATE,
                address,
                str(i),
                data_dir,
                multi,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["devices"] for r in results] == [4, 4]
    assert results[0] == results[1]  # every process computed the same global metrics

    np.testing.assert_allclose(results[0]["eval_loss"], expected["eval_loss"], atol=1e-5)
    assert results[0]["eval_accuracy"] == expected["eval_accuracy"]
    losses = [
        [r["train_loss"] for r in read_jsonl(w) if "train_loss" in r] for w in (single, multi)
    ]
    assert len(losses[0]) == 6
    np.testing.assert_allclose(losses[0], losses[1], atol=1e-5)
    np.testing.assert_allclose(
        np.load(single + "/params.npy"), np.load(multi + "/params.npy"), atol=1e-5
    )

    # The 2-process evaluation of that checkpoint equals a 1-device evaluation of it.
    one_device = str(tmp_path / "one_device")
    shutil.copytree(multi, one_device, ignore=shutil.ignore_patterns("eval"))
    proc = run_python(["main.py", "--mode=eval", f"--workdir={one_device}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    two, one = (os.path.join(w, "eval", "test_6") for w in (multi, one_device))
    two_metrics, one_metrics = (read_json(os.path.join(d, "metrics.json")) for d in (two, one))
    assert two_metrics["confusion_matrix"] == one_metrics["confusion_matrix"]
    assert two_metrics["num_examples"] == one_metrics["num_examples"] == 355
    assert two_metrics["accuracy"] == one_metrics["accuracy"]
    np.testing.assert_allclose(two_metrics["loss"], one_metrics["loss"], atol=1e-6)
    two_pred, one_pred = (np.load(os.path.join(d, "predictions.npz")) for d in (two, one))
    np.testing.assert_array_equal(two_pred["index"], np.arange(355))
    np.testing.assert_array_equal(two_pred["labels"], one_pred["labels"])
    np.testing.assert_allclose(two_pred["logits"], one_pred["logits"], atol=1e-5)


def read_json(path):
    with open(path) as f:
        return json.load(f)
