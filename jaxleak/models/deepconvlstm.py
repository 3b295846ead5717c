"""DeepConvLSTM (Ordonez & Roggen 2016) as configured in the HAR paper (spec 7.1)."""
from __future__ import annotations

import jax
from flax import linen as nn

from jaxleak.models.layers import (TorchLSTM, batch_to_channels, channels_to_batch, require_window_length,
                                   temporal_conv, xavier_normal)


class DeepConvLSTM(nn.Module):
  """Input f32[B, T=50, channels] -> logits f32[B, C].

  4 x Conv(64, kernel (9, 1) along time, VALID) + ReLU; time-major flatten (index c*64 + f); 2 x LSTM(128);
  last time step; Dropout(0.5); Dense head named "head" (bias optional). Penultimate D = 128.
  With `return_features=True` returns (logits, head_input) where head_input is what the head saw (after
  dropout in train mode).
  """
  # Hyper-parameter fields in the HeadModel layout (num_classes first, head_bias last), as every model declares
  # them: the same shape as TinyHAR's fields, not shared code.
  num_classes: int
  conv_filters: int = 64
  kernel_size: int = 9
  lstm_units: int = 128
  lstm_layers: int = 2
  dropout: float = 0.5
  head_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, return_features: bool = False):
    require_window_length("deepconvlstm", x.shape[-2], self.kernel_size, (1, 1, 1, 1))
    h = channels_to_batch(x)                                           # [B * ch, T, 1]
    for _ in range(4):
      h = nn.relu(temporal_conv(self.conv_filters, self.kernel_size)(h))
    h = batch_to_channels(h, x.shape[0])                               # [B, T', ch, F]
    b, t, ch, f = h.shape
    h = h.reshape(b, t, ch * f)
    for _ in range(self.lstm_layers):
      h = TorchLSTM(self.lstm_units)(h)
    feats = nn.Dropout(self.dropout, deterministic=not train)(h[:, -1])
    logits = nn.Dense(self.num_classes, use_bias=self.head_bias, kernel_init=xavier_normal,
                      bias_init=nn.initializers.zeros, name="head")(feats)
    return (logits, feats) if return_features else logits
