"""The one data type shared by every part of jaxleak (and `is_concrete`, the test every input check uses).

`LastLayerGrads` is what an update function produces and what an attack consumes. `LastLayerParams` has the
same structure and holds the classifier head's parameters (needed by LLG* and full iLRG).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax


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


def is_concrete(x) -> bool:
  """True unless `x` is traced (inside jit/vmap/grad): only concrete values can be inspected by an input check."""
  return not isinstance(x, jax.core.Tracer)
