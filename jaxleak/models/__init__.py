"""Models (Flax Linen) and a registry: the HAR models (DeepConvLSTM, TinyHAR) and the Eavesdrop paper's MLP and
small CNN. Every model follows the HeadModel interface (jaxleak/models/interface.py): a classifier head that is a
Dense named "head", `train` and `return_features` arguments.

  >>> import jax
  >>> model = build("tinyhar", num_classes=5)
  >>> variables = init(model, jax.random.key(0), window=50, channels=3)
  >>> head_params(variables["params"]).kernel.shape
  (40, 5)
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
import re

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxleak.models.deepconvlstm import DeepConvLSTM
from jaxleak.models.interface import USES, ModelSpec, check_head_model
from jaxleak.models.mnist import MLP, SmallCNN
from jaxleak.models.tinyhar import TinyHAR
from jaxleak.types import LastLayerParams, check_prng_key, is_int

_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, cls: type, *, uses: tuple[str, ...] = USES, summary: str = "",
             replace: bool = False) -> ModelSpec:
  """Registers a HeadModel class under `name` for the uses it supports (see interface.USES). `replace=True`
  lets a name registered before take the new class (e.g. a notebook cell run again)."""
  if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
    raise ValueError(f"model name {name!r}: give a non-empty name of letters, digits, '_', '-' or '.' (it is a "
                     "--model value and part of result keys).")
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise TypeError(f"model {name!r}: cls must be a Flax linen Module class (the class, not an instance), got "
                    f"{cls!r}.")
  if isinstance(uses, str):
    uses = (uses,)
  if name in _REGISTRY and not replace:
    raise ValueError(f"model {name!r} is already registered; choose another name, or pass replace=True to "
                     "register it again (e.g. a notebook cell run twice).")
  unknown = set(uses) - set(USES)
  if unknown:
    raise ValueError(f"model {name!r}: unknown uses {sorted(unknown)}; valid: {', '.join(USES)}.")
  spec = ModelSpec(name, cls, tuple(uses), summary)
  _REGISTRY[name] = spec
  return spec


register("deepconvlstm", DeepConvLSTM, summary="DeepConvLSTM (HAR paper; D = 128)")
register("tinyhar", TinyHAR, summary="TinyHAR (HAR paper; D = 2 x 20 filters = 40)")
register("mlp", MLP, summary="the Eavesdrop paper's MLP 256-64 (D = 64)")
register("cnn", SmallCNN, summary="the Eavesdrop paper's small CNN (PyTorch MNIST example; D = 50)")


# names/spec mirror attacks.registry's names/info: two registries of different records, each naming its own kind
# in its errors; a generic helper would save a few lines and blur those messages.
def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def spec(name: str) -> ModelSpec:
  """The registry record of `name`; ValueError listing the valid names."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(names())}.") from None


def require(name: str, use: str) -> ModelSpec:
  """The record of `name` if it supports `use`; otherwise a ValueError naming the model, the use and the models
  that support it (raised before any work)."""
  s = spec(name)
  if use not in s.uses:
    able = [n for n in names() if use in _REGISTRY[n].uses]
    raise ValueError(f"model {name!r} does not support {use}; models that do: {', '.join(able)}.")
  return s


def build(name: str, num_classes: int, **kwargs) -> nn.Module:
  """A model by registry name; kwargs go to the module (e.g. head_bias=False, dropout=0.0)."""
  cls = spec(name).cls
  if not is_int(num_classes) or num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2 (the head's outputs), got {num_classes!r}.")
  if dataclasses.is_dataclass(cls):
    fields = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name", "num_classes")]
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
      raise ValueError(f"{name}: unknown setting(s) {', '.join(unknown)}; it takes: {', '.join(fields)}.")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for k, v in kwargs.items():
      _check_setting(name, k, v, defaults[k])
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}   # modules are hashed (jit)
  return cls(num_classes=int(num_classes), **kwargs)


def _check_setting(model: str, field: str, value, default) -> None:
  """A model setting of the kind its default is (dropout a rate in [0, 1), flags booleans, sizes positive
  integers): Flax would take anything, e.g. dropout 1.5 or head_bias='no' (true)."""
  integer = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
  if field == "dropout":
    ok, want = (isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < 1), "a rate in [0, 1)"
  elif isinstance(default, bool):
    ok, want = isinstance(value, bool), "True or False"
  elif isinstance(default, numbers.Integral):
    ok, want = integer(value), "a positive integer"
  elif isinstance(default, tuple):
    ok, want = isinstance(value, (tuple, list)) and len(value) > 0 and all(map(integer, value)), \
        "a non-empty tuple of positive integers"
  else:
    return
  if not ok:
    raise ValueError(f"{model}: {field} must be {want}, got {value!r}.")


def init(model: nn.Module, key: jax.Array, window: int, channels: int) -> dict:
  """Initial variables ({'params', ['batch_stats']}) for inputs f32[B, window, channels]."""
  return init_for_shape(model, key, (window, channels))


def init_for_shape(model: nn.Module, key: jax.Array, example_shape: tuple[int, ...]) -> dict:
  """Initial variables for inputs f32[B, *example_shape] (one example's shape, e.g. (8, 8) for digits).
  Jitted (eager Flax init of TinyHAR takes ~2.5x longer than compiling it), and compiled once per (model, shape)
  in a process: a study's groups share it (TinyHAR's init compiles in ~1.5 s)."""
  shape = tuple(example_shape) if isinstance(example_shape, (tuple, list)) else None
  if not shape or any(not is_int(d) or d < 1 for d in shape):
    raise ValueError(f"example_shape must be positive integers, one example's shape (e.g. (window, channels) = "
                     f"(50, 6)); got {example_shape!r}.")
  check_prng_key(key, "init_for_shape")
  return dict(_init(model, key, tuple(int(d) for d in example_shape)))


@functools.partial(jax.jit, static_argnames=("model", "example_shape"))
def _init(model: nn.Module, key: jax.Array, example_shape: tuple[int, ...]) -> dict:
  return model.init({"params": key}, jnp.zeros((1, *example_shape), jnp.float32), train=False)


def head_params(params: dict) -> LastLayerParams:
  """The classifier head's LastLayerParams from a params tree (kernel [D, C], bias [C] or None)."""
  head = params.get("head") if hasattr(params, "get") else None
  if not (hasattr(head, "get") and "kernel" in head):
    hint = ("; pass variables['params'], not the whole variables" if hasattr(params, "get") and "params" in params
            else "; a model's classifier must be a Dense named 'head' (jaxleak/models/interface.py)")
    keys = sorted(map(str, params)) if hasattr(params, "keys") else type(params).__name__
    raise ValueError(f"head_params: no classifier head with a kernel in these params (top level: {keys}){hint}.")
  return LastLayerParams(kernel=head["kernel"], bias=head.get("bias"))


def num_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


__all__ = ["DeepConvLSTM", "MLP", "ModelSpec", "SmallCNN", "TinyHAR", "USES", "build", "check_head_model",
           "head_params", "init", "init_for_shape", "names", "num_params", "register", "require", "spec"]
