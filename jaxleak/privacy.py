"""Local differential privacy and compression as optax GradientTransformations.

Apply them to a gradient pytree before an attack (a params-shaped dict, or a LastLayerGrads). Compose with
`optax.chain` in the paper's order, clip then noise (`ldp` does that):

  >>> import jax, jax.numpy as jnp
  >>> from jaxleak import LastLayerGrads
  >>> grads = LastLayerGrads(kernel=jnp.full((2, 3), 3.0), bias=jnp.full((3,), 4.0))   # norm sqrt(6*9 + 3*16) > 1
  >>> clipped = privatize(grads, clip(1.0))
  >>> round(float(global_norm(clipped)), 4)
  1.0
  >>> tx = ldp(clip_norm=1.0, noise_std=0.1, key=jax.random.key(0))
  >>> private, _ = tx.update(grads, tx.init(grads))

Options that differ between the references are explicit:
  clip granularity  'batch'        clip the (mean) batch gradient once, as the HAR code (spec 4)
                    'per_example'  clip every example's gradient, then average, as DP-SGD; the input leaves
                                   then carry a leading example axis, which the output does not
  clip scope        'all'          the norm over every leaf given, as the HAR code (whole model)
                    'last_layer'   the norm over the classifier head only, as the HAR paper states; only the head
                                   is scaled. The head = leaves under a key named `head_key` ('head'), or all
                                   leaves of a LastLayerGrads.
  noise             absolute std sigma (the paper's parameterisation) or noise_multiplier * clip_norm.
"""
from __future__ import annotations

import math
import numbers
import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxleak.types import FLOAT32_MAX, LastLayerGrads, check_prng_key, is_concrete

GRANULARITIES = ("batch", "per_example")
SCOPES = ("all", "last_layer")
_EPS = 1e-6                                    # the HAR code's tau / (norm + 1e-6)


def _scope_mask(tree, scope: str, head_key: str):
  if scope not in SCOPES:
    raise ValueError(f"unknown clip scope {scope!r}; valid: {', '.join(SCOPES)}.")
  if scope == "all" or isinstance(tree, LastLayerGrads):
    return jax.tree.map(lambda _: True, tree)

  def in_head(path, _):
    return any(getattr(p, "key", getattr(p, "name", None)) == head_key for p in path)

  mask = jax.tree_util.tree_map_with_path(in_head, tree)
  if not any(jax.tree.leaves(mask)):
    raise ValueError(f"clip scope 'last_layer': no leaf under a key named {head_key!r} in the gradient tree; "
                     "pass head_key=... or use scope='all'.")
  return mask


def _float_leaves(tree, what: str, example_axis: bool = False):
  """(leaves as arrays, treedef) of an update tree; refuses integer or boolean leaves (noise cast to an integer is
  truncated, mostly to 0: the update would go out with no noise), and with `example_axis` (per-example clipping)
  leaves without one shared leading example axis."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  leaves = [jnp.asarray(x) for _, x in flat]
  for (path, _), x in zip(flat, leaves):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"{what}: the update leaf {jax.tree_util.keystr(path) or '(root)'} has dtype {x.dtype}; "
                      "updates are real-valued (noise or clipping cast to integers is lost): pass floating-point "
                      "arrays.")
  if example_axis:
    sizes = {x.shape[0] if x.ndim else None for x in leaves}
    if None in sizes or len(sizes) > 1:
      raise ValueError(f"{what}: every leaf needs one leading example axis of the same size (per-example "
                       f"gradients [n, ...]); got leading sizes {sorted(map(str, sizes))}. For a batch gradient "
                       "use granularity='batch'.")
  return leaves, treedef


def _norm(tree, mask, example_axis: bool):
  scoped = [x for x, m in zip(jax.tree.leaves(tree), jax.tree.leaves(mask)) if m]
  if not example_axis:
    return global_norm(scoped)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=tuple(range(1, x.ndim))) for x in scoped))


def global_norm(tree) -> jax.Array:
  """L2 norm over every entry of every leaf (f32 scalar)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def _dynamic(x) -> bool:
  """An array-valued (possibly traced) hyper-parameter, e.g. injected by optax.inject_hyperparams or vmapped over
  a sweep: it cannot be validated or branched on in Python."""
  return isinstance(x, (jax.Array, np.ndarray))


def _check_number(name: str, value) -> None:
  """A static hyper-parameter must be a real number (arrays are dynamic and pass through)."""
  if value is None or _dynamic(value):
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
  if math.isfinite(value) and value > FLOAT32_MAX:
    raise ValueError(f"{name} = {value:g} is beyond float32 (at most {FLOAT32_MAX:.4g}), which it is computed in: "
                     f"it would become inf there{'; give inf for no clipping' if 'clip' in name else ''}.")


def clip_factor(norm: jax.Array, max_norm) -> jax.Array:
  """The factor clipping applies for a given norm: max_norm / (norm + 1e-6) where norm > max_norm, else 1.
  max_norm may be an array (inf = no clipping gives the factor 1 exactly)."""
  if not _dynamic(max_norm) and math.isinf(max_norm):
    return jnp.ones_like(norm)
  return jnp.where(norm > max_norm, max_norm / (norm + _EPS), 1.0)


def clip(max_norm: float, *, granularity: str = "batch", scope: str = "all",
         head_key: str = "head") -> optax.GradientTransformation:
  """Clips to L2 norm `max_norm`: g <- g * max_norm / (norm + 1e-6) where norm > max_norm.

  Args:
    max_norm: tau > 0; math.inf gives the identity. An array (traced, e.g. swept with vmap or injected with
      `optax.inject_hyperparams`) is used as is, without Python-side validation.
    granularity: 'batch' or 'per_example' (leaves with a leading example axis; clipped per example, then
      averaged over it).
    scope: 'all' or 'last_layer' (see the module docstring).
    head_key: the key naming the head in a params-shaped tree.
  """
  if granularity not in GRANULARITIES:
    raise ValueError(f"unknown clip granularity {granularity!r}; valid: {', '.join(GRANULARITIES)}.")
  if scope not in SCOPES:
    raise ValueError(f"unknown clip scope {scope!r}; valid: {', '.join(SCOPES)}.")
  _check_number("clip norm", max_norm)
  static = not _dynamic(max_norm)
  if static and not max_norm > 0:
    raise ValueError(f"clip norm must be positive (math.inf for no clipping), got {max_norm}.")
  per_example = granularity == "per_example"

  def update(updates, state, params=None):
    del params
    leaves, treedef = _float_leaves(updates, "clip", per_example)
    updates = jax.tree.unflatten(treedef, leaves)
    mask = _scope_mask(updates, scope, head_key)
    no_clip = static and math.isinf(max_norm)
    factor = None if no_clip else clip_factor(_norm(updates, mask, per_example), max_norm)

    def one(x, m):
      if m and factor is not None:
        x = x * (factor.reshape((-1,) + (1,) * (x.ndim - 1)) if per_example else factor).astype(x.dtype)
      return jnp.mean(x, axis=0) if per_example else x

    return jax.tree.map(one, updates, mask), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class NoiseState(NamedTuple):
  """PRNG key for the next draw."""
  key: jax.Array


def gaussian_noise(stddev: Optional[float] = None, *, key: jax.Array, noise_multiplier: Optional[float] = None,
                   clip_norm: Optional[float] = None) -> optax.GradientTransformation:
  """Adds i.i.d. N(0, std^2) to every entry of every leaf (as the HAR code: all layers).

  Give either `stddev` (absolute, the paper's sigma) or `noise_multiplier` and `clip_norm`
  (std = multiplier * clip_norm, DP-SGD's parameterisation for a summed gradient). std = 0 is the identity.
  The state holds the key; each update uses it and stores a fresh one, so a given key gives the same noise.
  """
  if (stddev is None) == (noise_multiplier is None):
    raise ValueError("give exactly one of stddev or noise_multiplier (with clip_norm).")
  for name, value in (("stddev", stddev), ("noise_multiplier", noise_multiplier), ("clip_norm", clip_norm)):
    _check_number(name, value)
  if stddev is None:
    if clip_norm is None or (not _dynamic(clip_norm) and not math.isfinite(clip_norm)):
      raise ValueError("noise_multiplier needs a finite clip_norm (std = noise_multiplier * clip_norm).")
    stddev = noise_multiplier * clip_norm
  if not _dynamic(stddev) and not (math.isfinite(stddev) and stddev >= 0):
    raise ValueError(f"noise std must be a finite number >= 0, got {stddev}.")
  if key is None:
    raise ValueError("gaussian_noise needs a PRNG key for its noise; pass key=jax.random.key(seed) (a fresh one per "
                     "client and round, e.g. jax.random.fold_in(key, client_id)).")
  check_prng_key(key, "gaussian_noise")

  def init(params):
    del params
    return NoiseState(key=key)

  def update(updates, state, params=None):
    del params
    leaves, treedef = _float_leaves(updates, "gaussian_noise")
    next_key, *keys = jax.random.split(state.key, len(leaves) + 1)
    # The sum is formed at float32 (or the leaf's wider precision) and rounded once to the leaf's dtype: a bfloat16
    # update no longer gets its noise rounded to bfloat16 first (float32 and float64 leaves: the same as before).
    noisy = [_add_noise(x, stddev * jax.random.normal(k, x.shape, jnp.float32)) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy), NoiseState(key=next_key)

  return optax.GradientTransformation(init, update)


def _add_noise(x: jax.Array, noise: jax.Array) -> jax.Array:
  wide = jnp.promote_types(x.dtype, jnp.float32)
  return (x.astype(wide) + noise.astype(wide)).astype(x.dtype)


def top_k_compress(compression_ratio: float) -> optax.GradientTransformation:
  """Zeroes the smallest-magnitude entries: keeps the ceil((1 - ratio) * size) largest |g| over the whole tree.

  `compression_ratio` in [0, 1): the fraction of entries dropped (0 = identity), as the LLG paper's
  compression sweep. Ties at the threshold are kept; NaN and Inf entries are always kept (they rank as the largest),
  so a broken update stays visibly broken.
  """
  if isinstance(compression_ratio, bool) or not isinstance(compression_ratio, numbers.Real):
    raise TypeError(f"compression_ratio must be a number in [0, 1) (static: it sets how many entries are kept), "
                    f"got {compression_ratio!r} ({type(compression_ratio).__name__}).")
  if not 0.0 <= compression_ratio < 1.0:
    raise ValueError(f"compression_ratio must be in [0, 1), got {compression_ratio}.")

  def update(updates, state, params=None):
    del params
    if compression_ratio == 0.0:
      return updates, state
    # NaN counts as the largest magnitude, so a non-finite entry is always kept (never silently zeroed).
    magnitude = lambda x: jnp.where(jnp.isnan(x), jnp.inf, jnp.abs(x))
    flat = jnp.concatenate([magnitude(x).ravel() for x in jax.tree.leaves(updates)])
    keep = max(1, math.ceil((1.0 - compression_ratio) * flat.size))
    threshold = jax.lax.top_k(flat, keep)[0][-1]
    return jax.tree.map(lambda x: jnp.where(magnitude(x) >= threshold, x, jnp.zeros_like(x)), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def ldp(clip_norm: float = math.inf, noise_std: float = 0.0, *, key: jax.Array, granularity: str = "batch",
        scope: str = "all", head_key: str = "head") -> optax.GradientTransformation:
  """Clipping then Gaussian noise, the HAR paper's order. clip_norm=inf and noise_std=0 is the identity
  (per-example inputs are still averaged)."""
  return optax.chain(clip(clip_norm, granularity=granularity, scope=scope, head_key=head_key),
                     gaussian_noise(noise_std, key=key))


def _check_sweep_values(clip_norm, noise_std) -> None:
  """Refuses concrete (not traced) clip norms <= 0 or NaN and noise stds < 0 or non-finite, entry by entry: unlike
  `clip` and `gaussian_noise`, `ldp_injectable` takes arrays, which the transforms themselves never inspect (a
  negative clip norm would flip the update's sign)."""
  for name, value, bad, allowed in (
      ("clip_norm", clip_norm, lambda v: ~(v > 0), "> 0 (inf for no clipping)"),
      ("noise_std", noise_std, lambda v: ~((v <= FLOAT32_MAX) & (v >= 0)),
       f"finite in float32 (<= {FLOAT32_MAX:.4g}) and >= 0 (0 for no noise)")):
    if not is_concrete(value):
      continue
    kind = np.asarray(value).dtype.kind if not isinstance(value, str) else "U"
    if kind not in "fiu":
      raise TypeError(f"ldp_injectable: {name} must be a number or an array of numbers, got {value!r} "
                      f"({type(value).__name__}).")
    v = np.asarray(value, np.float64)
    if np.any(bad(v)):
      raise ValueError(f"ldp_injectable: every {name} must be {allowed}; got {v[bad(v)].ravel()[:3].tolist()} "
                       f"among {v.size} value(s).")


def ldp_injectable(clip_norm, noise_std, *, key: jax.Array, granularity: str = "batch", scope: str = "all",
                   head_key: str = "head") -> optax.GradientTransformationExtraArgs:
  """`ldp` with clip_norm and noise_std as *dynamic* hyper-parameters (optax.inject_hyperparams): they live in the
  transformation's state as arrays, so one compiled function serves every (sigma, tau), and a sweep is a vmap
  over them. clip_norm = inf means no clipping, noise_std = 0 no noise; the results equal `ldp` with the same
  values as Python floats exactly (tested).

  >>> import jax.numpy as jnp
  >>> g = jnp.full((4,), 3.0)                                       # norm 6
  >>> sweep = jax.vmap(lambda tau: privatize(g, ldp_injectable(tau, 0.0, key=jax.random.key(0))))
  >>> out = sweep(jnp.array([1.0, 12.0, jnp.inf]))                  # tau = 1 clips; 12 and inf do not
  >>> bool(jnp.allclose(out[0], 0.5)), bool(jnp.all(out[1:] == g))
  (True, True)
  """
  if granularity not in GRANULARITIES:
    raise ValueError(f"unknown clip granularity {granularity!r}; valid: {', '.join(GRANULARITIES)}.")
  if scope not in SCOPES:
    raise ValueError(f"unknown clip scope {scope!r}; valid: {', '.join(SCOPES)}.")
  check_prng_key(key, "ldp_injectable")
  _check_sweep_values(clip_norm, noise_std)
  factory = optax.inject_hyperparams(ldp)
  return factory(clip_norm=jnp.asarray(clip_norm, jnp.float32), noise_std=jnp.asarray(noise_std, jnp.float32),
                 key=key, granularity=granularity, scope=scope, head_key=head_key)


def privatize(grads, transform: optax.GradientTransformation):
  """Applies a stateless use of `transform` (init + one update) to a gradient tree."""
  return transform.update(grads, transform.init(grads))[0]


@dataclasses.dataclass(frozen=True)
class LdpConfig:
  """Local DP applied by a client before sending (spec 4): clip to `clip_norm`, then Gaussian noise with absolute
  std `noise_std`. clip_norm=inf means no clipping, noise_std=0 no noise. Scope and granularity: see `clip`.

  >>> LdpConfig(clip_norm=1.0, noise_std=0.1).is_identity
  False
  """
  clip_norm: float = math.inf
  noise_std: float = 0.0
  clip_scope: str = "all"
  clip_granularity: str = "batch"

  def __post_init__(self):
    for name in ("clip_norm", "noise_std"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    clip(self.clip_norm, granularity=self.clip_granularity, scope=self.clip_scope)   # validates
    _check_number("noise std", self.noise_std)
    if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
      raise ValueError(f"noise std must be a finite number >= 0, got {self.noise_std}.")

  @property
  def is_identity(self) -> bool:
    return math.isinf(self.clip_norm) and self.noise_std == 0.0

  @property
  def needs_full_gradient(self) -> bool:
    """Whole-model clipping needs the whole gradient's norm: a full backward pass."""
    return not math.isinf(self.clip_norm) and self.clip_scope == "all"

  @property
  def per_example(self) -> bool:
    return not math.isinf(self.clip_norm) and self.clip_granularity == "per_example"

  def transform(self, key: jax.Array) -> optax.GradientTransformation:
    """This setting as an optax transformation (clip, then noise drawn from `key`)."""
    return ldp(self.clip_norm, self.noise_std, key=key, granularity=self.clip_granularity, scope=self.clip_scope)
