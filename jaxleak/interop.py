"""Updates from other frameworks (PyTorch, Flower, Keras, NumPy) as the `LastLayerGrads` the attacks read.

Two things differ between frameworks and jaxleak: the head's layout (PyTorch's `nn.Linear.weight` is [C, D],
Flax's and Keras' kernel [D, C]) and what is sent (a gradient, or new weights from which the server forms the
update). `head_gradient` converts a gradient; `head_update` converts a client's weights before and after local
training into the gradient-equivalent the attacks assume (see `jaxleak.federated.multi_step`); `head_delta` gives
the Eavesdrop attacks' input, the head kernel's change G_{t+1} - G_t between two global models (or between a
model and the attacker's own per-label training of it).

Arrays may be NumPy arrays, anything `np.asarray` takes, or PyTorch tensors (detached and moved to the CPU here;
torch itself is never imported). Everything is checked before conversion: a wrong layout, mismatched shapes or
non-finite values raise ValueError naming the argument and the fix.

  >>> import numpy as np
  >>> w = np.zeros((3, 5), np.float32)                         # a PyTorch head: 3 classes, 5 features
  >>> g = head_gradient(w, np.array([0.1, -0.3, 0.2]))
  >>> g.kernel.shape, g.num_classes
  ((5, 3), 3)
"""
from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak.types import LastLayerGrads

LAYOUTS = ("torch", "flax", "keras")
EQUIVALENTS = ("mean", "sum")


def _array(x: Any, what: str) -> np.ndarray:
  if hasattr(x, "detach"):                       # a torch tensor: no grad, on the CPU, then NumPy
    x = x.detach().cpu()
    if str(x.dtype) == "torch.bfloat16":         # NumPy has no bfloat16; float32 holds it exactly
      x = x.float()
    if getattr(x, "is_quantized", False):
      raise TypeError(f"{what}: a quantized torch tensor ({x.dtype}); its integers mean nothing without its scale. "
                      "Pass tensor.dequantize().")
    x = x.numpy()
  try:
    a = np.asarray(x)
  except Exception as e:                         # e.g. a ragged list
    raise ValueError(f"{what}: cannot be read as an array ({e}).") from None
  if np.issubdtype(a.dtype, np.integer):
    # Weights and gradients are real-valued: integers are a cast gone wrong (truncated) or a quantized tensor,
    # whose values mean nothing without its scale; read as floats, either gives a plausible-looking wrong answer.
    raise TypeError(f"{what}: has dtype {a.dtype}; weights and gradients are real-valued. Pass floating-point "
                    "arrays (a quantized tensor dequantized first, e.g. torch's .dequantize()), and check where "
                    "integers came from.")
  if not np.issubdtype(a.dtype, np.floating):
    raise ValueError(f"{what}: needs real numbers, got dtype {a.dtype}.")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{what}: contains NaN or Inf; an attack on it would be meaningless. Check the update "
                     "(loss overflow, an exploding model) before attacking it.")
  return a.astype(np.float64)          # converted to float32 at the end, after any difference


def _head(weight: Any, bias: Any, layout: str, what: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """(kernel f64[..., D, C], bias f64[..., C] or None) from a head in `layout`; leading axes are batch axes."""
  if layout not in LAYOUTS:
    raise ValueError(f"layout: unknown {layout!r}; valid: {', '.join(LAYOUTS)} (torch: weight [C, D] as "
                     "nn.Linear; flax/keras: kernel [D, C]).")
  w = _array(weight, f"{what} weight")
  if w.ndim < 2:
    raise ValueError(f"{what} weight: must be [C, D] for torch, [D, C] for flax/keras (with any leading batch "
                     f"axes, e.g. one per client), got shape {w.shape}.")
  kernel = np.swapaxes(w, -1, -2) if layout == "torch" else w
  if kernel.shape[-1] < 2 or kernel.shape[-2] < 1:
    raise ValueError(f"{what} weight: {kernel.shape[-1]} classes by {kernel.shape[-2]} features (shape {w.shape}, "
                     f"layout {layout!r}); a head needs at least 2 classes and 1 feature. Check the layout "
                     "(torch: weight [C, D]) or that the right tensor was passed.")
  if bias is None:
    return kernel, None
  b = _array(bias, f"{what} bias")
  want = kernel.shape[:-2] + kernel.shape[-1:]
  if b.shape != want:
    hint = ""
    if b.shape == kernel.shape[:-1]:
      other = "flax" if layout == "torch" else "torch"
      hint = f" The weight looks like the {other} layout: pass layout={other!r}."
    raise ValueError(f"{what} bias: shape {b.shape} does not match the weight's {kernel.shape[-1]} classes "
                     f"(layout={layout!r}: weight {w.shape} -> kernel [..., D, C] = {kernel.shape}, so bias "
                     f"{want}).{hint}")
  return kernel, b


def _broadcastable(k0: np.ndarray, k1: np.ndarray) -> None:
  try:
    np.broadcast_shapes(k0.shape, k1.shape)
  except ValueError:
    raise ValueError(f"before {k0.shape[:-2]} and after {k1.shape[:-2]} have batch axes that do not match; give "
                     "one head for before (it broadcasts) or as many as after.") from None


def head_gradient(weight: Any, bias: Any = None, *, layout: str = "torch") -> LastLayerGrads:
  """A classifier head's gradient of the mean loss over the update's N samples, as `LastLayerGrads`.

  Args:
    weight: the head weight's gradient: [C, D] for layout 'torch' (`model.fc.weight.grad`), [D, C] for 'flax' or
      'keras'; leading axes are batch axes (e.g. [K, C, D] for K clients, then vmap the attack over them).
    bias: the bias's gradient [C] (or [K, C]), or None for a head without bias (then only the weight-based attacks
      apply).
    layout: 'torch' (default), 'flax' or 'keras'.

  The attacks assume the gradient of the *mean* loss (PyTorch's default `reduction='mean'`). A summed loss
  (`reduction='sum'`) gives N times that: divide it by N first.
  """
  kernel, b = _head(weight, bias, layout, "head gradient")
  return LastLayerGrads(kernel=jnp.asarray(kernel, jnp.float32),
                        bias=None if b is None else jnp.asarray(b, jnp.float32))


def head_update(before: tuple, after: tuple, *, lr: float | np.ndarray, local_steps: int | np.ndarray = 1,
                equivalent: str = "mean", layout: str = "torch") -> LastLayerGrads:
  """The gradient-equivalent of a client's update of the head, from its weights before and after local training.

  A client running `local_steps` = S steps of plain SGD (no momentum, no weight decay) at learning rate `lr` sends
  theta_S = theta_0 - lr * sum_s g_s. This returns (theta_0 - theta_S) / (lr * S), the average of the S
  mini-batch-mean gradients ('mean', the scale of one gradient over the N samples, what the attacks assume), or
  (theta_0 - theta_S) / lr ('sum', what the HAR paper's code hands its attacks). With Adam, momentum or weight
  decay the update is not a sum of gradients and the attacks' assumptions do not hold.

  Args:
    before: (weight, bias) of the global head the client started from (bias None for a bias-free head); in
      Flower, the head's entries of the parameters the server sent. Leading batch axes as in `head_gradient`
      (before may be one head and after K clients' heads: it broadcasts).
    after: (weight, bias) of the head the client sent back (Flower: of `parameters_to_ndarrays(fit_res.parameters)`).
    lr: the clients' learning rate, > 0: one number, or one per client (an array of the update's batch shape).
    local_steps: S, the number of SGD steps (FedAvg: epochs x ceil(samples / batch size)): one int, or one per
      client (an integer array of the update's batch shape, e.g. [K]: clients of different sizes run different S).
    equivalent: 'mean' (default) or 'sum'.
    layout: 'torch' (default: weight [C, D]), 'flax' or 'keras' ([D, C]).

  Pass the attacks N = all the samples behind the update (not the local batch size B); for clients of different
  sizes, one N per client: `jax.vmap(attack)(update, sizes)`.

  >>> import numpy as np
  >>> w0, b0 = np.zeros((2, 4)), np.zeros(2)
  >>> g = head_update((w0, b0), (w0 - 0.1 * 3 * np.ones((2, 4)), b0 - 0.1 * 3 * np.array([0.5, -0.5])),
  ...                 lr=0.1, local_steps=3)
  >>> np.asarray(g.bias).round(6).tolist()
  [0.5, -0.5]
  """
  if equivalent not in EQUIVALENTS:
    raise ValueError(f"equivalent: unknown {equivalent!r}; valid: {', '.join(EQUIVALENTS)}.")
  for name, pair in (("before", before), ("after", after)):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise ValueError(f"{name}: must be a pair (weight, bias), bias None for a head without bias; got "
                       f"{type(pair).__name__}.")
  k0, b0 = _head(before[0], before[1], layout, "before")
  k1, b1 = _head(after[0], after[1], layout, "after")
  if k0.shape[-2:] != k1.shape[-2:] or (b0 is None) != (b1 is None):
    raise ValueError(f"before and after are different heads: kernel {k0.shape} vs {k1.shape}, bias "
                     f"{'absent' if b0 is None else 'present'} vs {'absent' if b1 is None else 'present'}.")
  _broadcastable(k0, k1)
  batch = np.broadcast_shapes(k0.shape[:-2], k1.shape[:-2])
  lr = _per_client(lr, "lr", batch, integer=False)
  local_steps = _per_client(local_steps, "local_steps", batch, integer=True)
  # The difference in float64: weights given in float64 keep their digits; float32 ones lose none here.
  scale = 1.0 / (lr * (local_steps if equivalent == "mean" else 1))
  kernel = (k0 - k1) * np.expand_dims(scale, (-2, -1))
  bias = None if b0 is None else (b0 - b1) * np.expand_dims(scale, -1)
  return LastLayerGrads(kernel=jnp.asarray(kernel, jnp.float32),
                        bias=None if bias is None else jnp.asarray(bias, jnp.float32))


def _per_client(value, name: str, batch: tuple, *, integer: bool) -> np.ndarray:
  """`lr` or `local_steps` as float64 of shape () or `batch` (one per client), checked: finite and > 0; integers
  for local_steps."""
  what = ("a positive integer (the client's SGD steps)" if integer else
          "a finite number > 0 (the clients' SGD learning rate)")
  shown = value.item() if np.ndim(value) == 0 and hasattr(value, "item") else value      # 0.1, not np.float32(0.1)
  if isinstance(value, (bool, np.bool_)) or (hasattr(value, "dtype") and value.dtype == bool):
    raise ValueError(f"{name} must be {what}, got {shown!r}.")
  if np.ndim(value) == 0:
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    ok = ok or (hasattr(value, "dtype") and np.issubdtype(value.dtype, np.integer if integer else np.number))
    if not ok or not (math.isfinite(float(value)) and float(value) > 0):
      raise ValueError(f"{name} must be {what}, got {shown!r}.")
    return np.float64(value)
  array = np.asarray(value)
  if np.shape(array) != batch:
    raise ValueError(f"{name} has shape {np.shape(array)}: give one value, or one per client with the update's "
                     f"batch shape {batch}.")
  if not np.issubdtype(array.dtype, np.integer if integer else np.number) or np.issubdtype(array.dtype,
                                                                                            np.complexfloating):
    raise ValueError(f"{name} must be {'integers' if integer else 'real numbers'} (one per client), got dtype "
                     f"{array.dtype}.")
  as_float = array.astype(np.float64)
  if not (np.all(np.isfinite(as_float)) and np.all(as_float > 0)):
    bad = int(np.flatnonzero(~(np.isfinite(as_float) & (as_float > 0)).reshape(-1))[0])
    raise ValueError(f"{name}: every client's value must be {what.split(' (')[0]}; entry {bad} is "
                     f"{array.reshape(-1)[bad].item()!r}.")
  return as_float


def head_delta(before_weight: Any, after_weight: Any, *, layout: str = "torch") -> jax.Array:
  """after - before of a head's weight, as f32[D, C] (Flax layout): the Eavesdrop attacks' `global_update` from two
  successive global models, or one row of their per-label updates U[j] from the attacker's training on label j
  (stack C of them: U f32[C, D, C]). See `jaxleak.attacks.eavesdrop`.

  >>> import numpy as np
  >>> head_delta(np.zeros((2, 3)), np.ones((2, 3))).shape           # torch [C = 2, D = 3] -> [D, C]
  (3, 2)
  """
  k0, _ = _head(before_weight, None, layout, "before")
  k1, _ = _head(after_weight, None, layout, "after")
  if k0.shape[-2:] != k1.shape[-2:]:
    raise ValueError(f"before and after are different heads: kernel {k0.shape} vs {k1.shape}.")
  _broadcastable(k0, k1)
  return jnp.asarray(k1 - k0, jnp.float32)
