"""The one data type shared by every part of jaxleak, and the tests every input check shares (`is_concrete`,
`check_prng_key`, `values_outside`, `seeded_rng`).

`LastLayerGrads` is what an update function produces and what an attack consumes. `LastLayerParams` has the
same structure and holds the classifier head's parameters (needed by LLG* and full iLRG).
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy
import numpy as np


class LastLayerGrads(NamedTuple):
  """Gradient of the *mean* loss over the N samples of an update w.r.t. the classifier head.

  Attributes:
    kernel: f32[..., D, C], Flax Dense layout (features by classes). Leading axes are batch axes.
    bias: f32[..., C], or None for a head built without bias.
  """
  kernel: jax.Array
  bias: Optional[jax.Array]

  @property
  def num_classes(self) -> int:
    return self.kernel.shape[-1]


class LastLayerParams(NamedTuple):
  """The classifier head's parameters: kernel f32[D, C], bias f32[C] or None."""
  kernel: jax.Array
  bias: Optional[jax.Array]


#: N, the samples behind one update, as the attacks take it: a static Python int, or a traced integer scalar (one N
#: per update under vmap).
NumSamples = Union[int, jax.Array]


#: The largest finite float32. Hyper-parameters enter float32 computations: a finite value above this becomes inf there
#: (a noise std of 1e300 would be infinite noise, a learning rate of 1e300 an infinite step), so it is refused.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_int(value) -> bool:
  """An integer, Python's or NumPy's, and not a bool (True would pass as 1)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_local_training(config, counts: tuple[str, ...]) -> None:
  """Raises ValueError naming `config` unless its fields `counts` are positive integers and its `lr` a number in
  (0, FLOAT32_MAX] (local SGD runs in float32)."""
  lr = config.lr
  if (not all(is_int(v) and v > 0 for v in (getattr(config, c) for c in counts))
      or not (isinstance(lr, numbers.Real) and not isinstance(lr, bool) and 0 < lr <= FLOAT32_MAX)):
    names = " and ".join(c.replace("_", " ") for c in counts)
    raise ValueError(f"local {names} must be positive integers, the learning rate a number in "
                     f"(0, {FLOAT32_MAX:.4g}] (float32); got {config}.")


def is_concrete(x) -> bool:
  """True unless `x` is traced (inside jit/vmap/grad): only concrete values can be inspected by an input check."""
  return not isinstance(x, jax.core.Tracer)


def check_prng_key(key, who: str) -> None:
  """Raises TypeError unless `key` is one JAX PRNG key (a typed key, or the raw uint32[2] of jax.random.PRNGKey),
  concrete or traced."""
  dtype = getattr(key, "dtype", None)
  typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and jax.numpy.ndim(key) == 0
  raw = dtype == jax.numpy.uint32 and jax.numpy.shape(key) == (2,)
  if not (typed or raw):
    raise TypeError(f"{who}: key must be one JAX PRNG key, e.g. jax.random.key(0); got {type(key).__name__}"
                    f"{'' if dtype is None else f' of dtype {dtype} and shape {jax.numpy.shape(key)}'}.")


def values_outside(values, stop: int, mask=None) -> "tuple[int, int] | None":
  """(min, max) of the concrete integer `values` (where `mask` is set) when any lies outside [0, stop), else None;
  None too when traced (inside jit they cannot be inspected). The caller names the values in its error."""
  if not (is_concrete(values) and (mask is None or is_concrete(mask))):
    return None
  v = np.asarray(values)
  if mask is not None:
    v = v[np.broadcast_to(np.asarray(mask, bool), v.shape)]
  if v.size and (v.min() < 0 or v.max() >= stop):
    return int(v.min()), int(v.max())
  return None


def seeded_rng(seed) -> np.random.Generator:
  """NumPy's generator for a host-side seed, refusing anything but an integer >= 0 (NumPy's own words for -1 or
  1.5 do not name the argument)."""
  if not is_int(seed) or seed < 0:
    raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
  return np.random.default_rng(seed)
