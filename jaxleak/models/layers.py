"""Layers shared by the HAR models."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

xavier_normal = nn.initializers.xavier_normal()


class TorchLSTM(nn.Module):
  """One unidirectional LSTM layer with PyTorch's parameter layout (spec 7.1, 11).

  Gates i, f, g, o; two bias vectors (b_ih, b_hh), so parameter counts and checkpoints match PyTorch:
  4H (in + H) + 8H. Weights Xavier-normal on the stacked [in, 4H] / [H, 4H] matrices, biases U(-1/sqrt(H),
  1/sqrt(H)) (PyTorch's default, kept by the reference init). Input f32[B, T, in] -> outputs f32[B, T, H].
  """
  hidden: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.hidden
    bound = 1.0 / jnp.sqrt(h)
    uniform = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)
    w_ih = self.param("w_ih", xavier_normal, (x.shape[-1], 4 * h))
    w_hh = self.param("w_hh", xavier_normal, (h, 4 * h))
    b_ih = self.param("b_ih", uniform, (4 * h,))
    b_hh = self.param("b_hh", uniform, (4 * h,))
    # All input projections in one [B*T, in] x [in, 4H] matmul, then time-major: on XLA:CPU einsum("bti,ig->tbg")
    # transposed inside the product (DeepConvLSTM's layers at 800 windows: 109 -> 104 and 93 -> 70 ms; BUILD_NOTES.md).
    # Unrolling the scan as well made the multi-step compile 4x slower for no gain inside the model; not done.
    b, t, n_in = x.shape
    x_proj = jnp.swapaxes((x.reshape(b * t, n_in) @ w_ih).reshape(b, t, 4 * h), 0, 1) + (b_ih + b_hh)

    def step(carry, xp):
      h_prev, c_prev = carry
      gates = xp + h_prev @ w_hh
      i, f, g, o = jnp.split(gates, 4, axis=-1)
      c = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(g)
      h_new = jax.nn.sigmoid(o) * jnp.tanh(c)
      return (h_new, c), h_new

    zeros = jnp.zeros((b, h), x_proj.dtype)               # the gates' dtype (float64 params under jax_enable_x64)
    _, outs = jax.lax.scan(step, (zeros, zeros), x_proj)
    return jnp.swapaxes(outs, 0, 1)


def channels_to_batch(x: jax.Array) -> jax.Array:
  """f32[B, T, ch] -> f32[B * ch, T, 1]: each sensor channel becomes its own 1-D sequence."""
  b, t, ch = x.shape
  return jnp.swapaxes(x, 1, 2).reshape(b * ch, t, 1)


def batch_to_channels(h: jax.Array, batch: int) -> jax.Array:
  """f32[B * ch, T', F] -> f32[B, T', ch, F]."""
  bc, t, f = h.shape
  return jnp.swapaxes(h.reshape(batch, bc // batch, t, f), 1, 2)


def pad_full_window(h: jax.Array, kernel_size: int) -> jax.Array:
  """f32[B, T, C] -> the same, with one zero time step appended when T == kernel_size (a no-op otherwise).

  A VALID conv whose window spans its whole input has one output step, and the appended step never enters it,
  so the result is the same. Why: XLA's SPMD partitioner computes such a conv WRONGLY when it is vmapped over
  per-batch weights (a grouped conv) and sharded over the batch (jax 0.10.2, XLA:CPU; off by up to 9 on unit-scale
  data; T = kernel + 1 is correct). TinyHAR's last conv (9 steps in, kernel 9) is such a conv; with the pad, runs
  with per-batch weights (trained folds, multi-step) shard correctly. Reproduction:
  tests/test_sharding.py::test_xla_partitions_a_per_batch_conv_spanning_its_input_wrongly.
  """
  if h.shape[1] != kernel_size:
    return h
  return jnp.pad(h, ((0, 0), (0, 1), (0, 0)))


def temporal_conv(features: int, kernel_size: int, stride: int = 1) -> nn.Conv:
  """A conv along time only, shared across sensor channels: the reference's Conv2d with kernel (k, 1).

  Applied to [B * ch, T, C_in] (see channels_to_batch): the same function and parameter count as the 2-D
  (k, 1) conv on [B, T, ch, C_in], and several times faster on CPU.
  """
  return nn.Conv(features, (kernel_size,), strides=(stride,), padding="VALID", kernel_init=xavier_normal,
                 bias_init=nn.initializers.zeros)


def require_window_length(model: str, length: int, kernel_size: int, strides) -> None:
  """Raises ValueError when windows of `length` time steps are shorter than the receptive field of VALID convs
  with `kernel_size` and these `strides` (the last conv would have no output step: the features would silently
  be empty sums or clamped reads)."""
  need = 1
  for s in reversed(tuple(strides)):
    need = (need - 1) * s + kernel_size
  if length < need:
    raise ValueError(f"{model}: windows of {length} time steps are shorter than its receptive field ({len(strides)} "
                     f"VALID convs of kernel {kernel_size}, strides {list(strides)}: at least {need} steps); use "
                     f"longer windows or a smaller kernel_size.")
