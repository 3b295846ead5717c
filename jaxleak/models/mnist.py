"""The Eavesdrop paper's MNIST models (sec. IV-A3), sized for any small input: an MLP and a small CNN.

Both take f32[B, ...] and return logits f32[B, C] (with return_features=True: (logits, the head's input f32[B, D]));
the classifier head is a Dense named "head" (the HeadModel interface, jaxleak/models/interface.py). Dropout (the
paper's, and its second defence) is active only with train=True and needs a 'dropout' rng.
"""
from __future__ import annotations

from typing import Sequence

import jax
from flax import linen as nn


class MLP(nn.Module):
  """Flatten -> Dense(256) ReLU -> Dropout -> Dense(64) ReLU -> head. Penultimate D = hidden[-1] = 64.

  The paper: "two fully-connected hidden layers of size 256 and 64. There is a dropout operation between hidden
  layers". `dropout=0` removes it (the dropout-defence ablation).
  """
  num_classes: int
  hidden: Sequence[int] = (256, 64)
  dropout: float = 0.5
  head_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, return_features: bool = False):
    h = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      if i > 0 and self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
      h = nn.relu(nn.Dense(width)(h))
    logits = nn.Dense(self.num_classes, use_bias=self.head_bias, name="head")(h)
    return (logits, h) if return_features else logits


def block_max_pool(h: jax.Array, window: tuple[int, int]) -> jax.Array:
  """nn.max_pool(h, window, strides=window) (VALID: a remainder row/column is dropped) as a max over reshaped
  blocks, f32[B, H, W, C] -> f32[B, H // a, W // b, C]. The same values; its gradient is plain elementwise work,
  where max_pool's (select-and-scatter) is ~5x slower on XLA:CPU and dominated the CNN's local training (ties,
  which a continuous input almost never has, share the gradient instead of giving it to the first maximum)."""
  a, b = window
  n, hh, ww, c = h.shape
  h = h[:, :hh // a * a, :ww // b * b]
  return h.reshape(n, hh // a, a, ww // b, b, c).max(axis=(2, 4))


class SmallCNN(nn.Module):
  """The PyTorch MNIST-example CNN the paper describes.

  Conv(10, 5x5) -> maxpool 2 -> ReLU -> Conv(20, 5x5) -> Dropout -> maxpool 2 -> ReLU -> flatten ->
  Dense(50) ReLU -> Dropout -> head. Inputs f32[B, H, W] (one channel) or f32[B, H, W, ch]; HAR windows
  [B, T, ch] are read as one-channel T x ch images. Penultimate D = 50. padding "auto": VALID (the paper's
  unpadded convolutions) for inputs of at least 28x28, where 28x28 MNIST flattens to the paper's 4*4*20 = 320;
  SAME below, so 8x8 digits (flatten 2*2*20 = 80) and HAR windows fit.
  """
  num_classes: int
  features: Sequence[int] = (10, 20)
  hidden: int = 50
  dropout: float = 0.5
  head_bias: bool = True
  padding: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, return_features: bool = False):
    h = x[..., None] if x.ndim == 3 else x
    padding = self.padding
    if padding == "auto":
      padding = "VALID" if min(h.shape[1], h.shape[2]) >= 28 else "SAME"
    for i, f in enumerate(self.features):
      h = nn.Conv(f, (5, 5), padding=padding)(h)
      if i > 0 and self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
      window = (min(2, h.shape[1]), min(2, h.shape[2]))
      h = nn.relu(block_max_pool(h, window))
    h = h.reshape(h.shape[0], -1)
    h = nn.relu(nn.Dense(self.hidden)(h))
    if self.dropout > 0:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    logits = nn.Dense(self.num_classes, use_bias=self.head_bias, name="head")(h)
    return (logits, h) if return_features else logits
