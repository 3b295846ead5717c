"""Models (Flax Linen) and a registry: the HAR models and the Eavesdrop paper's MLP and small CNN. Every model's classifier head is a Dense named "head"."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxleak.models.deepconvlstm import DeepConvLSTM
from jaxleak.models.small import MLP, SmallCNN
from jaxleak.models.tinyhar import TinyHAR
from jaxleak.types import LastLayerParams

MODELS = {"deepconvlstm": DeepConvLSTM, "tinyhar": TinyHAR, "mlp": MLP, "cnn": SmallCNN}


def build(name: str, num_classes: int, **kwargs) -> nn.Module:
  """A model by registry name ('deepconvlstm', 'tinyhar', 'mlp', 'cnn'); kwargs go to the module (e.g. head_bias=False)."""
  try:
    cls = MODELS[name]
  except KeyError:
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}.") from None
  return cls(num_classes=num_classes, **kwargs)


def init(model: nn.Module, key: jax.Array, window: int, channels: int) -> dict:
  """Initial variables ({'params', ['batch_stats']}) for inputs f32[B, window, channels]."""
  return init_for_shape(model, key, (window, channels))


def init_for_shape(model: nn.Module, key: jax.Array, example_shape: tuple[int, ...]) -> dict:
  """Initial variables for inputs f32[B, *example_shape] (one example's shape, e.g. (8, 8) for digits).
  Jitted: eager Flax init of TinyHAR takes ~2.5x longer than compiling it."""
  init_fn = jax.jit(lambda k: model.init({"params": k}, jnp.zeros((1, *example_shape), jnp.float32), train=False))
  return dict(init_fn(key))


def head_params(params: dict) -> LastLayerParams:
  """The classifier head's LastLayerParams from a params tree (kernel [D, C], bias [C] or None)."""
  head = params["head"]
  return LastLayerParams(kernel=head["kernel"], bias=head.get("bias"))


def num_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


__all__ = ["DeepConvLSTM", "MLP", "MODELS", "SmallCNN", "TinyHAR", "build", "head_params", "init", "init_for_shape",
           "num_params"]
