"""CLU metric collections for training and evaluation.

Metrics are computed per device inside the jitted step and gathered over the `data` mesh
axis there, so the host only ever sees a handful of scalars.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics
from flax import serialization


def _correct(logits, labels, targets=None, **_):
    """1/0 per example; with soft `targets` (mixup, cutmix), the target mass of the prediction.

    That is lam * [pred == a] + (1 - lam) * [pred == b] for a mix of labels a and b, and the
    usual accuracy for one-hot targets.
    """
    predicted = logits.argmax(-1)
    if targets is None:
        return (predicted == labels).astype(jnp.float32)
    return jnp.take_along_axis(targets, predicted[..., None], axis=-1)[..., 0]


def _top5_correct(logits, labels, targets=None, **_):
    top5 = jnp.argsort(logits, axis=-1)[..., -5:]
    if targets is None:
        return jnp.any(top5 == labels[..., None], axis=-1).astype(jnp.float32)
    return jnp.take_along_axis(targets, top5, axis=-1).sum(-1)


@flax.struct.dataclass
class Metrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_fun(_correct)


@flax.struct.dataclass
class MetricsWithTop5(metrics.Collection):  # CLU reads only a class's own annotations
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_fun(_correct)
    top5_accuracy: metrics.Average.from_fun(_top5_correct)


def metrics_collection(num_classes: int) -> type[metrics.Collection]:
    """Loss and accuracy; top-5 accuracy too when there are at least 5 classes."""
    return MetricsWithTop5 if num_classes >= 5 else Metrics


def confusion_matrix_metric(num_classes: int) -> type[metrics.Metric]:
    """A mergeable [true, predicted] count matrix; precision/recall/F1 derive from it."""

    @flax.struct.dataclass
    class ConfusionMatrix(metrics.Metric):
        matrix: jnp.ndarray

        @classmethod
        def empty(cls):
            return cls(matrix=jnp.zeros((num_classes, num_classes), jnp.int32))

        @classmethod
        def from_model_output(cls, *, logits, labels, mask=None, **_):
            weight = jnp.ones_like(labels) if mask is None else mask.astype(jnp.int32)
            matrix = jnp.zeros((num_classes, num_classes), jnp.int32)
            return cls(matrix=matrix.at[labels, logits.argmax(-1)].add(weight))

        def merge(self, other):
            return type(self)(matrix=self.matrix + other.matrix)

        def compute(self):
            return self.matrix

    return ConfusionMatrix


def report_collection(num_classes: int) -> type[metrics.Collection]:
    """The evaluation collection plus the confusion matrix, for checkpoint reports."""
    fields = dict(metrics_collection(num_classes).__annotations__)
    return metrics.Collection.create(**fields, confusion=confusion_matrix_metric(num_classes))


def to_scalars(collection: metrics.Collection, prefix: str) -> dict[str, float]:
    """Computes a collection on the host as `{prefix_name: float}`."""
    return {f"{prefix}_{k}": float(v) for k, v in collection.compute().items()}


def collection_to_json(collection: metrics.Collection | None):
    """The merged (not yet computed) state of a collection as JSON-able lists, exactly: resuming
    a run restores its half-accumulated training metrics with collection_from_json."""
    if collection is None:
        return None
    return jax.tree.map(lambda x: np.asarray(x).tolist(), serialization.to_state_dict(collection))


def collection_from_json(metrics_cls: type[metrics.Collection], data):
    """The collection saved by collection_to_json (None stays None), with its dtypes."""
    if data is None:
        return None
    template = serialization.to_state_dict(metrics_cls.empty())
    values = jax.tree.map(lambda t, v: np.asarray(v, dtype=np.asarray(t).dtype), template, data)
    return serialization.from_state_dict(metrics_cls.empty(), values)
