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
