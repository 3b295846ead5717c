"""The HeadModel interface: what a model must expose to be attacked by jaxleak.

A HeadModel is a Flax Linen module with

* fields `num_classes: int` and `head_bias: bool = True` (a head without bias is the HAR paper's recommended
  defence), built as `cls(num_classes=C, head_bias=..., **options)`;
* `__call__(x, *, train: bool = False, return_features: bool = False)`: x f32[B, *example_shape] -> logits f32[B, C];
  with `return_features=True` -> (logits, features f32[B, D]) where features are exactly the head's input (after
  dropout in train mode), so that logits == features @ kernel + bias;
* its classifier head as a top-level `nn.Dense` named "head": params["head"]["kernel"] f32[D, C] and, iff
  head_bias, params["head"]["bias"] f32[C];
* randomness only from the rng named 'dropout' (train mode), and mutable state only in 'batch_stats'.

Uses (what each part of jaxleak relies on):
  'leakage'        HAR leakage runs: inputs f32[B, T, channels] windows; return_features (fast head gradient,
                   LLG* estimates).
  'eavesdrop'      Eavesdrop federations: any example shape (images or windows); the head's kernel updates.
  'fold_training'  LOSO training of the global models: inputs f32[B, T, channels].

`check_head_model` verifies the contract on a freshly initialised model (the conformance test runs it for every
registered model).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

USES = ("leakage", "eavesdrop", "fold_training")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model: its class, the uses it supports and one line for --help."""
  name: str
  cls: type
  uses: tuple[str, ...] = USES
  summary: str = ""


def check_head_model(model: nn.Module, example_shape: Sequence[int], batch: int = 3) -> None:
  """Raises AssertionError naming the broken clause of the HeadModel contract (see the module docstring)."""
  x = jax.random.normal(jax.random.key(0), (batch, *example_shape))
  for field in ("num_classes", "head_bias"):
    assert hasattr(model, field), f"the model has no field {field!r} (a HeadModel is built as cls(num_classes=C, " \
                                  "head_bias=...))"
  try:
    variables = jax.jit(lambda k: model.init({"params": k}, x, train=False))(jax.random.key(1))
  except TypeError as e:
    if "unexpected keyword argument" not in str(e):
      raise
    raise AssertionError(f"__call__ must take the keyword arguments train= and return_features= ({e})") from None
  assert set(variables) <= {"params", "batch_stats"}, f"unexpected collections {set(variables)}"
  head = variables["params"].get("head")
  assert head is not None, "no top-level Dense named 'head' in params"
  c = model.num_classes
  kernel = head["kernel"]
  assert kernel.ndim == 2 and kernel.shape[1] == c, f"head kernel {kernel.shape} is not [D, {c}]"
  assert ("bias" in head) == bool(model.head_bias), "head bias present iff head_bias"
  mutable = [k for k in variables if k != "params"]
  rngs = {"dropout": jax.random.key(2)}

  @jax.jit
  def outputs(v):
    train = (model.apply(v, x, train=True, rngs=rngs, mutable=mutable)[0] if mutable
             else model.apply(v, x, train=True, rngs=rngs))
    return model.apply(v, x, train=False), model.apply(v, x, train=False, return_features=True), train

  logits, out, logits_t = outputs(variables)
  chex.assert_shape(logits, (batch, c))
  assert isinstance(out, tuple) and len(out) == 2, "return_features=True must return (logits, features)"
  logits2, feats = out
  assert np.shape(feats) == (batch, kernel.shape[0]), (
      f"return_features=True gave features of shape {np.shape(feats)}; they must be the head's input "
      f"[B, D] = {(batch, kernel.shape[0])}")
  chex.assert_trees_all_close(logits2, logits, rtol=1e-6, atol=1e-6)
  recomputed = feats @ kernel + (head["bias"] if "bias" in head else 0.0)
  np.testing.assert_allclose(np.asarray(recomputed), np.asarray(logits), rtol=1e-4, atol=1e-5,
                             err_msg="logits != features @ kernel + bias: the head is not the last operation")
  chex.assert_shape(logits_t, (batch, c))
  assert bool(jnp.all(jnp.isfinite(logits_t))), "train-mode logits are not finite"
