"""Building blocks shared by the label-count attacks.

Every attack works on ONE gradient (kernel f32[D, C], bias f32[C]) and returns counts i32[C] summing to
`num_samples`; batching is done by the caller with `jax.vmap`. `num_samples` is usually a static Python int: it
fixes the trip count of the greedy loop, so one compilation serves every gradient of a vmapped call. It may also
be a traced integer scalar (one N per update, vmapped with the gradients: clients of different sizes in one
compilation); then the greedy loop runs while labels are missing, and the attacks that pad with random labels
draw `max_samples` (a static bound on N) and keep the first ones. The counts equal the static path's for the
same N and key (JAX's default partitionable threefry draws the same leading labels for any draw length). Under
`jax.jit` a traced N outside [1, max_samples] gives counts of `INVALID_COUNT`, as a NaN gradient does.

Non-finite gradients: called eagerly (concrete arrays) an attack raises `ValueError`. Under `jax.jit` values
cannot be inspected before tracing, so an attack whose input has any NaN/Inf returns counts filled with
`INVALID_COUNT` (-1); `jaxleak.metrics` scores such a row as NaN, so it can never pass as a result.
An all-zero gradient (every array the attack reads is zero: a client that did not train, or before == after) is
refused eagerly too: it carries no label information, and any counts would be an arbitrary split. Under `jax.jit`
it is not inspected (it cannot arise from a finite loss with a softmax head, short of a perfect fit).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak.types import LastLayerGrads, NumSamples, check_prng_key, is_concrete, is_int

INVALID_COUNT = -1
#: The largest N an attack accepts: the greedy stage and the count estimates run in float32, which represents every
#: integer up to 2**24 exactly (beyond it, N and the counts are rounded), and the random padding draws N labels.
MAX_NUM_SAMPLES = 2 ** 24


def check_num_samples(num_samples, attack: str, *, traced_ok: bool = True, max_samples=None,
                      name: str = "num_samples"):
  """N as a Python int (concrete 0-d integer arrays are read as one), checked eagerly; or, when `traced_ok`, a
  traced integer scalar, returned as int32 with any value outside [1, bound] replaced by 1 (so the loops stay
  short; `guard_nonfinite(..., num_samples=...)` then marks the counts invalid). bound: `max_samples` if given,
  else MAX_NUM_SAMPLES. `name` is the argument's name in messages (other counts, e.g. local_batch_size, too)."""
  bound = check_max_samples(max_samples, attack)
  if isinstance(num_samples, jax.core.Tracer):
    if not traced_ok:
      raise TypeError(f"{attack}: {name} must be a Python int here (it sets an array shape), got a traced "
                      "value; call it once per N.")
    if num_samples.shape != () or not jnp.issubdtype(num_samples.dtype, jnp.integer):
      raise TypeError(f"{attack}: a traced {name} must be an integer scalar (one N per update; vmap it with "
                      f"the gradients), got {num_samples.dtype}{list(num_samples.shape)}.")
    n = num_samples.astype(jnp.int32)
    return jnp.where(num_samples_ok(n, bound), n, 1)
  if isinstance(num_samples, (np.ndarray, jax.Array)) and np.ndim(num_samples) == 0 \
     and jnp.issubdtype(num_samples.dtype, jnp.integer):
    num_samples = int(num_samples)
  if not is_int(num_samples):
    raise TypeError(
        f"{attack}: {name} must be an int (a Python int, or under jax.vmap a traced integer scalar), got "
        f"{type(num_samples).__name__}. Pass e.g. {name}=100.")
  if num_samples <= 0:
    what = " (the number of samples in the update)" if name == "num_samples" else ""
    raise ValueError(f"{attack}: {name} must be positive{what}, got {num_samples}.")
  if num_samples > MAX_NUM_SAMPLES:
    raise ValueError(f"{attack}: {name}={num_samples:,} is too large; it must be at most {MAX_NUM_SAMPLES:,} "
                     "(2**24, the largest N whose counts float32 arithmetic represents exactly).")
  if max_samples is not None and num_samples > bound:
    raise ValueError(f"{attack}: {name}={num_samples:,} is larger than max_samples={bound:,}; raise "
                     "max_samples to the largest N of your updates.")
  return int(num_samples)


def check_max_samples(max_samples, attack: str) -> int:
  """The static bound on a traced N: `max_samples` (a positive int up to MAX_NUM_SAMPLES), or MAX_NUM_SAMPLES."""
  if max_samples is None:
    return MAX_NUM_SAMPLES
  if not is_int(max_samples) or not 0 < max_samples <= MAX_NUM_SAMPLES:
    raise ValueError(f"{attack}: max_samples must be a Python int in [1, {MAX_NUM_SAMPLES:,}] (a static bound on "
                     f"a traced num_samples), got {max_samples!r}.")
  return int(max_samples)


def is_traced_n(num_samples) -> bool:
  """True for a traced N (an int32 array from check_num_samples); False for a static Python int."""
  return not isinstance(num_samples, int)


def num_samples_ok(num_samples, bound: int = MAX_NUM_SAMPLES):
  """bool[]: a traced N lies in [1, bound]; True (Python) for a static N, which was checked eagerly."""
  if not is_traced_n(num_samples):
    return True
  return (num_samples >= 1) & (num_samples <= bound)


def require_max_samples(num_samples, max_samples, attack: str) -> None:
  """Attacks that pad with random labels draw `max_samples` of them for a traced N: refuse a traced N without it."""
  if isinstance(num_samples, jax.core.Tracer) and max_samples is None:
    raise ValueError(f"{attack}: num_samples is traced (one N per update), and this attack pads with random labels, "
                     "an array whose length must be static: pass max_samples=<the largest N of your updates> "
                     "(with attacks.run: AttackContext(max_samples=...)).")


def as_float(num_samples):
  """N as a float for arithmetic: a Python float for a static N, float32[] for a traced one."""
  return float(num_samples) if not is_traced_n(num_samples) else num_samples.astype(jnp.float32)


def _leaves_finite(tree) -> bool:
  """True unless a concrete leaf of `tree` holds NaN/Inf (traced leaves are checked by guard_nonfinite)."""
  return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree) if is_concrete(x))


def validate(grads, num_samples, attack: str, *, needs_bias: bool = False,
             needs_kernel: bool = True, extra: Optional[dict] = None, max_samples=None):
  """Checks shapes (always) and finiteness (when the arrays are concrete) of the gradient and of any `extra`
  inputs ({name: pytree}, e.g. the head's params). Returns num_samples as `check_num_samples` does."""
  n = check_num_samples(num_samples, attack, max_samples=max_samples)
  check_grads(grads, attack, needs_bias=needs_bias, needs_kernel=needs_kernel, extra=extra)
  return n


def check_grads(grads, attack: str, *, needs_bias: bool = False, needs_kernel: bool = True,
                extra: Optional[dict] = None) -> None:
  """`validate` without N: the gradient's type, shapes and dtypes (always), and finiteness when concrete."""
  if not isinstance(grads, LastLayerGrads):
    raise TypeError(f"{attack}: grads must be a jaxleak.LastLayerGrads(kernel, bias), got "
                    f"{type(grads).__name__}. Build one with LastLayerGrads(kernel=..., bias=...).")
  kernel, bias = grads.kernel, grads.bias
  for name, leaf in (("kernel", kernel), ("bias", bias)):
    if leaf is not None and not hasattr(leaf, "shape"):
      raise TypeError(f"{attack}: grads.{name} must be an array (JAX or NumPy), got {type(leaf).__name__}; wrap it "
                      "in jnp.asarray(..., jnp.float32).")
  if needs_kernel and kernel is None:
    raise ValueError(f"{attack}: needs the head's weight gradient (grads.kernel), which is None.")
  if kernel is not None and np.ndim(kernel) != 2:
    raise ValueError(
        f"{attack}: grads.kernel must have shape [D, C] for one gradient, got {np.shape(kernel)}. "
        "For a batch of gradients use jax.vmap(lambda g: attack(g, N))(grads).")
  if kernel is not None and np.shape(kernel)[0] == 0:
    raise ValueError(f"{attack}: grads.kernel has shape {np.shape(kernel)}: no feature rows (D = 0). The head's "
                     "weight gradient is [D, C] with D the penultimate layer's width.")
  if needs_bias and bias is None:
    raise ValueError(
        f"{attack}: this is a bias-gradient attack but grads.bias is None (a head without bias). "
        "Use a weight-gradient attack such as 'llg' instead.")
  if bias is not None:
    if np.ndim(bias) != 1:
      raise ValueError(f"{attack}: grads.bias must have shape [C] for one gradient, got {np.shape(bias)}.")
    if kernel is not None and np.shape(kernel)[-1] != np.shape(bias)[0]:
      raise ValueError(
          f"{attack}: kernel {np.shape(kernel)} and bias {np.shape(bias)} disagree on the number of classes; "
          "kernel must be [D, C] (Flax layout: features by classes) and bias [C]. A PyTorch weight [C, D] "
          "must be transposed.")
  for name, leaf in (("kernel", kernel), ("bias", bias)):
    if leaf is not None and not jnp.issubdtype(leaf.dtype, jnp.floating):
      raise TypeError(f"{attack}: grads.{name} has dtype {leaf.dtype}; a gradient is real-valued: pass "
                      "floating-point arrays (e.g. .astype(jnp.float32)), and check where integers came from.")
  c = (np.shape(bias)[0] if bias is not None else np.shape(kernel)[-1])
  if c < 2:
    raise ValueError(f"{attack}: need at least 2 classes, got C={c}.")
  for name, leaf in (("kernel", kernel), ("bias", bias)):
    if leaf is not None and is_concrete(leaf) and not bool(np.all(np.isfinite(np.asarray(leaf)))):
      raise ValueError(f"{attack}: grads.{name} contains NaN or Inf; a label attack on it is meaningless. "
                       "Check the update (loss overflow, an exploding model, or noise added twice).")
  read = [leaf for leaf, used in ((kernel, needs_kernel), (bias, needs_bias)) if used and leaf is not None]
  if read and all(is_concrete(leaf) and not np.any(np.asarray(leaf)) for leaf in read):
    names = " and ".join(f"grads.{n}" for n, used in (("kernel", needs_kernel), ("bias", needs_bias)) if used)
    raise ValueError(f"{attack}: {names} {'is' if len(read) == 1 else 'are'} all zero: an update without signal "
                     "says nothing about its labels, and any counts would be an arbitrary split. Check that the "
                     "client trained (lr > 0, weights after != before) and that the gradient is of the loss.")
  for name, tree in (extra or {}).items():
    if not _leaves_finite(tree):
      raise ValueError(f"{attack}: {name} contains NaN or Inf; estimate it again at finite model parameters.")


def all_finite(*trees) -> jax.Array:
  """bool[]: every leaf of every tree is finite (None leaves are skipped)."""
  leaves = [x for t in trees for x in jax.tree.leaves(t)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def guard_nonfinite(counts: jax.Array, grads: LastLayerGrads, *extra, num_samples=None,
                    max_samples=None) -> jax.Array:
  """Replaces counts by INVALID_COUNT when the gradient or any `extra` input (head params, LLG* estimates) has
  non-finite entries, or a traced `num_samples` (as the caller passed it) lies outside [1, max_samples] (the jit
  path; eager calls raise in `validate` first)."""
  ok = all_finite(grads, *extra)
  if isinstance(num_samples, jax.core.Tracer):
    ok = ok & num_samples_ok(num_samples, check_max_samples(max_samples, "guard_nonfinite"))
  return jnp.where(ok, counts, INVALID_COUNT).astype(jnp.int32)


def keep_first(counts: jax.Array, num_samples: NumSamples) -> jax.Array:
  """Keeps the first `num_samples` labels of a label list given as counts in index order.

  This is the "more than N labels: keep the first N" rule applied to a stage-1 list appended in class-index order.
  """
  before = jnp.cumsum(counts) - counts
  return jnp.clip(num_samples - before, 0, counts).astype(counts.dtype)


def greedy_fill(values: jax.Array, counts: jax.Array, decrement: jax.Array, num_samples: NumSamples,
                decrement_index: Optional[int] = None) -> jax.Array:
  """Stage 2 of the two-stage attacks: until there are N labels, pick argmin(values) and raise it.

  Args:
    values: f32[C], the (already stage-1 adjusted) gradient signal.
    counts: i32[C], labels chosen so far (sum <= num_samples).
    decrement: scalar, the estimated impact m of one instance (negative); each pick does values[i] -= m. Or
      f32[C], one impact per class: a pick of class i does values[i] -= decrement[i] (`gcd`).
    num_samples: N (a static int: a loop of N steps; or traced: a loop while labels are missing).
    decrement_index: None to raise the selected class (the methods' papers); an int to always raise that fixed
      class instead (the HAR/breaching stale-index behaviour, spec 2.1).

  Returns:
    i32[C] counts summing to num_samples. `argmin` takes the first index of ties, as PyTorch does.
  """
  remaining = num_samples - jnp.sum(counts)

  def body(i, carry):
    v, c = carry
    active = i < remaining
    sel = jnp.argmin(v)
    target = sel if decrement_index is None else decrement_index
    c = c.at[sel].add(active.astype(c.dtype))
    step = decrement if jnp.ndim(decrement) == 0 else decrement[target]
    # v.at[target].add(...) as a select: a float scatter-add is a loop of its indices under XLA:GPU's determinism.
    v = jnp.where(jnp.arange(v.shape[-1]) == target, v + jnp.where(active, -step, jnp.zeros_like(step)), v)
    return v, c

  if not is_traced_n(num_samples):
    _, counts = jax.lax.fori_loop(0, num_samples, body, (values, counts))
    return counts
  _, _, counts = jax.lax.while_loop(lambda carry: carry[0] < remaining,
                                    lambda carry: (carry[0] + 1, *body(carry[0], carry[1:])),
                                    (jnp.zeros((), remaining.dtype), values, counts))
  return counts


def random_fill(counts: jax.Array, num_samples: NumSamples, num_classes: int, key: jax.Array,
                max_samples: Optional[int] = None) -> jax.Array:
  """Pads a label list with uniformly random labels until it has N labels (spec 2.10). A traced N draws
  `max_samples` labels (static) and uses the first N - sum(counts), the labels a draw of N would give."""
  deficit = num_samples - jnp.sum(counts)
  draws = num_samples if not is_traced_n(num_samples) else check_max_samples(max_samples, "random_fill")
  labels = jax.random.randint(key, (draws,), 0, num_classes)
  labels = jnp.where(jnp.arange(draws) < deficit, labels, num_classes)  # num_classes = "unused"
  extra = jnp.zeros((num_classes + 1,), counts.dtype).at[labels].add(1)[:num_classes]
  return counts + extra


def require_key(key, attack: str):
  if key is None:
    raise ValueError(f"{attack}: needs a PRNG key for its random labels; pass key=jax.random.key(seed) "
                     "(fold in the batch id so results do not depend on chunking).")
  check_prng_key(key, attack)
  return key


def two_stage(values: jax.Array, present: jax.Array, impact: jax.Array, num_samples: NumSamples, *,
              stage1_counts: jax.Array, decrement_index: Optional[int] = None) -> jax.Array:
  """Stage 1 (raise every `present` class by |impact|) and then the greedy stage 2."""
  values = jnp.where(present, values - impact, values)
  return greedy_fill(values, stage1_counts, impact, num_samples, decrement_index)
