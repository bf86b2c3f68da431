"""Max-pooling with a fast gradient on CPUs: the same values and gradients as `nn.max_pool`.

flax's `nn.max_pool` lowers to XLA's reduce_window, whose gradient (select-and-scatter) is slow
on XLA:CPU: it was about two thirds of the default cnn's train step there. Here the window's
elements are strided slices of the (padded) input: the forward pass is their elementwise max,
and the custom gradient sends each output's gradient to the first maximal element of its window
in row-major order, which is where select-and-scatter sends it. So values equal `nn.max_pool`'s
and gradients too, ties included (exactly for windows that tile the image, as the cnn's 2x2;
for overlapping windows, such as the ResNet stem's 3x3/2, up to the order in which an element's
shares are added, ~1e-7; tests/test_models.py). The cnn's train step runs ~3x faster on 2 CPU
cores (benchmarks/versus_peers.py).
"""

import functools

import jax
import jax.numpy as jnp


def _same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of XLA's 'SAME': output size ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _views(x, window, strides, pads):
    """The k*k strided views [B, H', W', C] of the padded input, one per window position in
    row-major order: view j holds element j of every window."""
    (kh, kw), (sh, sw) = window, strides
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    out_h = (padded.shape[1] - kh) // sh + 1
    out_w = (padded.shape[2] - kw) // sw + 1
    return [
        padded[:, dy : dy + sh * (out_h - 1) + 1 : sh, dx : dx + sw * (out_w - 1) + 1 : sw]
        for dy in range(kh)
        for dx in range(kw)
    ]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
    return functools.reduce(jnp.maximum, _views(x, window, strides, pads))


def _forward(x, window, strides, pads):
    y = _max_pool(x, window, strides, pads)
    return y, (x, y)


def _backward(window, strides, pads, residuals, g):
    """Each output's gradient goes to the first element of its window equal to the output
    (recomputed from the input: nothing but x and y is kept from the forward pass)."""
    x, y = residuals
    (kh, kw), (sh, sw) = window, strides
    taken = jnp.zeros(y.shape, bool)
    shares = []
    for view in _views(x, window, strides, pads):
        first = (view == y) & ~taken
        taken = taken | first
        shares.append(jnp.where(first, g, 0))
    b, out_h, out_w, c = g.shape
    padded_h, padded_w = x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1])
    if (kh, kw) == (sh, sw) and (padded_h, padded_w) == (out_h * kh, out_w * kw):
        # the windows tile the image: interleave the shares back (no scatter)
        rows = [jnp.stack(shares[r * kw : (r + 1) * kw], axis=3) for r in range(kh)]
        grad = jnp.stack(rows, axis=2).reshape(b, padded_h, padded_w, c)
    else:  # overlapping windows: add each share where it came from
        grad = jnp.zeros((b, padded_h, padded_w, c), g.dtype)
        for j, share in enumerate(shares):
            dy, dx = divmod(j, kw)
            rows = slice(dy, dy + sh * (out_h - 1) + 1, sh)
            cols = slice(dx, dx + sw * (out_w - 1) + 1, sw)
            grad = grad.at[:, rows, cols].add(share)
    (top, _), (left, _) = pads
    return (grad[:, top : top + x.shape[1], left : left + x.shape[2]].astype(x.dtype),)


_max_pool.defvjp(_forward, _backward)


def max_pool(x, window_shape, strides=None, padding="SAME"):
    """`nn.max_pool(x, window_shape, strides, padding)` for NHWC inputs, fast to train.

    padding is 'SAME' or ((top, bottom), (left, right)), as nn.max_pool takes them.
    """
    if x.ndim != 4:
        raise ValueError(f"max_pool takes NHWC inputs, got shape {x.shape}.")
    window = tuple(window_shape)
    strides = tuple(strides or window)
    if padding == "SAME":
        pads = tuple(
            _same_padding(n, k, s) for n, k, s in zip(x.shape[1:3], window, strides, strict=True)
        )
    elif padding == "VALID":
        pads = ((0, 0), (0, 0))
    else:
        pads = tuple(tuple(p) for p in padding)
    return _max_pool(x, window, strides, pads)
