"""TinyHAR (Zhou et al. 2022) as configured in the HAR paper (spec 7.2): attn / FC / lstm / naive."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxleak.models.layers import (TorchLSTM, batch_to_channels, channels_to_batch, pad_full_window,
                                   require_window_length, temporal_conv, xavier_normal)


class ChannelSelfAttention(nn.Module):
  """Self-attention across sensor channels at every time step: X f32[B, T, ch, F] -> same shape.

  S = Q K^T over channels, softmax over the first (input-channel) index, out_j = gamma sum_i S_ij V_i + X_j with
  bias-free F x F projections and a learnable gamma initialised to 0.
  """

  @nn.compact
  def __call__(self, x):
    f = x.shape[-1]
    dense = lambda name: nn.Dense(f, use_bias=False, kernel_init=xavier_normal, name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
    scores = jax.nn.softmax(jnp.einsum("btif,btjf->btij", q, k), axis=-2)
    gamma = self.param("gamma", nn.initializers.zeros, ())
    return gamma * jnp.einsum("btij,btif->btjf", scores, v) + x


class TinyHAR(nn.Module):
  """Input f32[B, T=50, channels] -> logits f32[B, C]. Penultimate D = 2F (40 for F = 20).

  BatchNorm runs on batch statistics in train mode (call `apply` with mutable=['batch_stats']), on running
  statistics otherwise (momentum 0.1 in PyTorch's convention = Flax momentum 0.9, epsilon 1e-5).
  """
  num_classes: int
  filters: int = 20
  kernel_size: int = 9
  dropout: float = 0.5
  head_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, return_features: bool = False):
    require_window_length("tinyhar", x.shape[-2], self.kernel_size, (1, 2, 1, 2))
    h = channels_to_batch(x)                                           # [B * ch, T, 1]
    for stride in (1, 2, 1, 2):
      h = temporal_conv(self.filters, self.kernel_size, stride)(pad_full_window(h, self.kernel_size))
      # Statistics over (B, ch, T) per filter, exactly as BatchNorm2d over [B, F, T, ch].
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(nn.relu(h))
    h = ChannelSelfAttention()(batch_to_channels(h, x.shape[0]))      # [B, T', ch, F]
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    b, t, ch, f = h.shape
    h = nn.relu(nn.Dense(2 * self.filters, kernel_init=xavier_normal, bias_init=nn.initializers.zeros,
                         name="fusion")(h.reshape(b, t, ch * f)))
    h = TorchLSTM(2 * self.filters)(h)                                # [B, T', 2F]
    score = nn.Dense(1, kernel_init=xavier_normal, bias_init=nn.initializers.zeros, name="temporal_score")(h)
    feats = jnp.sum(jax.nn.softmax(score, axis=1) * h, axis=1)
    logits = nn.Dense(self.num_classes, use_bias=self.head_bias, kernel_init=xavier_normal,
                      bias_init=nn.initializers.zeros, name="head")(feats)
    return (logits, feats) if return_features else logits
