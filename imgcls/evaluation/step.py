"""The eval step: a model's logits and masked metrics on one batch shard, data-parallel.

Written per device, as the train step is: padding examples (mask False) count for nothing, and
the CLU metrics are merged over the 'data' axis inside the step. Training evaluates its
validation split with `evaluate_batches`; checkpoint evaluation (evaluate.py) adds the
confusion matrix and keeps the logits. Imports and runs without TensorFlow.
"""

import functools

from jax.sharding import PartitionSpec as P

from imgcls import losses, models, parallel
from imgcls.data.normalize import mean_std, normalize
from imgcls.evaluation import metrics as metrics_lib
from imgcls.evaluation import tta as tta_lib

AXIS = parallel.AXIS
# What an eval batch sends to the devices; its 'index' (position in the split) stays on the host.
EVAL_DEVICE_KEYS = ("image", "label", "mask")


def eval_step(variables, batch, *, apply_fn, mean, std, metrics_cls, tta="none"):
    """Logits and masked metrics of one eval batch shard (padding examples have mask False);
    `tta` (imgcls.evaluation.tta.MODES) averages the logits of transformed views."""

    def logits_fn(images):
        return apply_fn(variables, images, train=False)

    logits = tta_lib.logits(tta, logits_fn, normalize(batch["image"], mean, std))
    batch_metrics = metrics_cls.gather_from_model_output(
        axis_name=AXIS,
        loss=losses.cross_entropy(logits, batch["label"]),
        logits=logits,
        labels=batch["label"],
        mask=batch["mask"],
    )
    return batch_metrics, logits


def make_eval_step(config, num_classes: int, mesh, metrics_cls=None, tta=None):
    """The data-parallel eval step f(variables, global batch) -> (merged metrics, logits
    sharded on 'data'), for config's model in inference mode. metrics_cls defaults to the
    training collection (loss, accuracy, top-5); tta to config.eval_tta."""
    mean, std = mean_std(config)
    return parallel.data_parallel(
        functools.partial(
            eval_step,
            apply_fn=models.from_config(config, num_classes).apply,
            mean=mean,
            std=std,
            metrics_cls=metrics_cls or metrics_lib.metrics_collection(num_classes),
            tta=tta_lib.check_mode(tta, config),
        ),
        mesh,
        in_specs=(P(), P(AXIS)),
        out_specs=(P(), P(AXIS)),
    )


def run_eval_step(p_eval, variables, local_batch, mesh):
    """Runs the eval step on one host-local eval batch from the input pipeline."""
    device_batch = {k: local_batch[k] for k in EVAL_DEVICE_KEYS}
    return p_eval(variables, parallel.global_batch(mesh, device_batch))


def evaluate_batches(p_eval, variables, batches, mesh):
    """Merges the metrics of every eval batch; exact because padding is masked."""
    total = None
    for local_batch in batches:
        batch_metrics, _ = run_eval_step(p_eval, variables, local_batch, mesh)
        total = batch_metrics if total is None else total.merge(batch_metrics)
    return total
