"""Independent gradient construction for attack tests (jax.grad, not jaxleak's closed form)."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxleak import LastLayerGrads, LastLayerParams


def mean_ce_head_grads(features, labels, kernel, bias):
  """LastLayerGrads of the mean softmax cross-entropy via jax.grad."""
  def loss(params):
    k, b = params
    logits = features @ k + (0.0 if b is None else b)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
  gk, gb = jax.grad(loss)((kernel, bias))
  return LastLayerGrads(kernel=gk, bias=gb)


def labels_from_counts(counts, seed=0):
  labels = np.repeat(np.arange(len(counts)), counts)
  return np.random.default_rng(seed).permutation(labels).astype(np.int32)


def random_head(key, d, c, w_scale, b_scale=0.0):
  kk, kb = jax.random.split(key)
  return LastLayerParams(kernel=w_scale * jax.random.normal(kk, (d, c)),
                         bias=b_scale * jax.random.normal(kb, (c,)))


def deepconvlstm_forward_flops(channels: int, classes: int) -> int:
  """Matmul FLOPs of one window's DeepConvLSTM forward pass as the architecture is written (spec 7.1): four (9, 1)
  convs of 64 filters over time (50 -> 42 -> 34 -> 26 -> 18) per sensor channel, two LSTM(128) layers over 18 steps
  (input 64 * channels, then 128), a Dense(128 -> C) head."""
  convs = sum(2 * channels * t * 64 * cin * 9 for t, cin in ((42, 1), (34, 64), (26, 64), (18, 64)))
  lstm = 2 * 18 * 4 * 128 * (64 * channels + 128) + 2 * 18 * 4 * 128 * (128 + 128)
  return convs + lstm + 2 * 128 * classes
