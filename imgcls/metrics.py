"""CLU metric collections for training and evaluation.

Metrics are computed per device inside the jitted step and gathered over the `data` mesh
axis there, so the host only ever sees a handful of scalars.
"""

import flax
import jax.numpy as jnp
from clu import metrics


def _top5_correct(logits, labels, **_):
    top5 = jnp.argsort(logits, axis=-1)[..., -5:]
    return jnp.any(top5 == labels[..., None], axis=-1).astype(jnp.float32)


@flax.struct.dataclass
class Metrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Accuracy


@flax.struct.dataclass
class MetricsWithTop5(metrics.Collection):  # CLU reads only a class's own annotations
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Accuracy
    top5_accuracy: metrics.Average.from_fun(_top5_correct)


def metrics_collection(num_classes: int) -> type[metrics.Collection]:
    """Loss and accuracy; top-5 accuracy too when there are at least 5 classes."""
    return MetricsWithTop5 if num_classes >= 5 else Metrics


def to_scalars(collection: metrics.Collection, prefix: str) -> dict[str, float]:
    """Computes a collection on the host as `{prefix_name: float}`."""
    return {f"{prefix}_{k}": float(v) for k, v in collection.compute().items()}
