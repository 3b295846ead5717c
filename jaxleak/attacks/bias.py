"""Bias-gradient attacks: EBI, LLBG (Gat & Sharif, AISec 2024) and iLRG (Ma et al., ICLR 2023).

Signal: the head's bias gradient g_b[c] = (1/N) sum_n (softmax(z_n)[c] - 1[y_n = c]). For an untrained model with
near-uniform softmax, g_b[c] ~= 1/C - n_c/N: classes present with frequency above 1/C are negative.

Example, worked by hand: a uniform softmax, C = 4, N = 8 samples with counts n = [4, 3, 1, 0], so
g_b = 1/4 - n/8 = [-0.25, -0.125, 0.125, 0.25]. iLRG's uniform closed form 2 - 8 (g_b - mean(g_b)) is exact, and
so is full iLRG through a head whose softmax is uniform (all zeros). EBI and LLBG see the two negative entries
only: stage 1 gives classes 0 and 1 one label each, stage 2 the other six (raising the argmin by
|m| = 0.375 / 8 for EBI, 1.25 times that for LLBG) four to class 0 and two to class 1; class 2, rarer than 1/C,
is missed. LLBG with Gat and Sharif's impact -1/B (B = N = 8: this gradient's exact step per label) finds all
three:

>>> import jax, jax.numpy as jnp
>>> b = 1 / 4 - jnp.array([4, 3, 1, 0]) / 8
>>> g = LastLayerGrads(kernel=jnp.zeros((16, 4)), bias=b)     # a zero kernel: zero class embeddings
>>> ilrg_uniform(g, 8, key=jax.random.key(0)).tolist(), llbg_original(g, 8).tolist()
([4, 3, 1, 0], [4, 3, 1, 0])
>>> ilrg(g, 8, head=LastLayerParams(kernel=jnp.zeros((16, 4)), bias=jnp.zeros(4))).tolist()
[4, 3, 1, 0]
>>> ebi(g, 8).tolist(), llbg(g, 8).tolist()
([5, 3, 0, 0], [5, 3, 0, 0])
"""
from __future__ import annotations

import numbers
from typing import Optional

import jax
import jax.numpy as jnp

from jaxleak.attacks import _common
from jaxleak.attacks.registry import register
from jaxleak.types import LastLayerGrads, LastLayerParams, NumSamples


def _bias(grads):
  return grads.bias.astype(jnp.float32)


@register("ebi", signal="bias", summary="EBI: empirical bias impact sum(neg)/N")
def ebi(grads: LastLayerGrads, num_samples: NumSamples) -> jax.Array:
  """EBI, empirical bias impact (the LLBG paper's baseline; breaching's `bias-corrected` with a cap; spec 2.3).

  V = {c : g_b[c] < 0}. Stage 1 takes the min(N, |V|) most negative classes. Impact m = sum_{c in V} g_b[c] / N;
  every class of V is raised by |m|; stage 2 repeatedly takes argmin and raises it by |m|. If V is empty (only
  possible with noise) m = 0 and all N labels go to argmin.

  Returns i32[C] counts summing to N.
  """
  n = _common.validate(grads, num_samples, "ebi", needs_bias=True, needs_kernel=False)
  b = _bias(grads)
  present = b < 0
  rank = jnp.argsort(jnp.argsort(b, stable=True), stable=True)      # 0 = most negative
  stage1 = (present & (rank < n)).astype(jnp.int32)
  impact = jnp.sum(jnp.where(present, b, 0.0)) / n
  counts = _common.two_stage(b, present, impact, n, stage1_counts=stage1)
  return _common.guard_nonfinite(counts, grads, num_samples=num_samples)


@register("bias_corrected", signal="bias", summary="EBI's stage 1 in index order, uncapped (breaching)")
def bias_corrected(grads: LastLayerGrads, num_samples: NumSamples) -> jax.Array:
  """breaching's `bias-corrected` strategy (spec 2.7): EBI whose stage 1 takes V = {c : g_b[c] < 0} in class-index
  order instead of the N most negative.

  Impact m = sum_{c in V} g_b[c] / N (EBI's); V raised by |m|; greedy stage 2 raising the selected class. Equals
  `ebi` whenever |V| <= N. With |V| > N the reference's list keeps every class of V (more than N labels); here the
  first N in index order, as `llbg` keeps them, so that the counts sum to N.

  >>> g = LastLayerGrads(kernel=jnp.zeros((2, 4)), bias=jnp.array([-0.1, -0.3, -0.2, 0.6]))
  >>> bias_corrected(g, 2).tolist(), ebi(g, 2).tolist()          # |V| = 3 > N: index order against most negative
  ([1, 1, 0, 0], [0, 1, 1, 0])
  """
  n = _common.validate(grads, num_samples, "bias_corrected", needs_bias=True, needs_kernel=False)
  b = _bias(grads)
  present = b < 0
  stage1 = _common.keep_first(present.astype(jnp.int32), n)
  impact = jnp.sum(jnp.where(present, b, 0.0)) / n
  counts = _common.two_stage(b, present, impact, n, stage1_counts=stage1)
  return _common.guard_nonfinite(counts, grads, num_samples=num_samples)


# `gcd`'s two thresholds, as the HAR code's older commit fixes them (spec 2.7): a difference of bias entries is a
# candidate impact when it rounds to a non-zero number at two decimals; a candidate "divides" the bias gradient when
# every entry's remainder modulo it is at most 0.01 in magnitude.
GCD_MIN_DIFFERENCE = 0.005
GCD_DIVIDES_TOLERANCE = 0.01


def gcd_candidates(grads: LastLayerGrads) -> jax.Array:
  """`gcd`'s candidate impacts before they are checked: f32[C], one per position y of g_b sorted descending.

  For every position y (in that order) and every x, d = g_b_sorted[y] - g_b_sorted[x] is a candidate when
  |d| > 0.005; its score is sum_c (g_b[c] mod d) (the remainder takes the divisor's sign, as Python's and torch's
  do; summed left to right in float32, as the reference's Python `sum` does). One running best over all (y, x) in
  that order, replaced only by a strictly lower score: candidate[y] = -(the best after row y), 0 while no
  difference qualified.
  """
  _common.check_grads(grads, "gcd_candidates", needs_bias=True, needs_kernel=False)
  b = _bias(grads)
  b_sorted = -jnp.sort(-b)
  diff = b_sorted[:, None] - b_sorted[None, :]                              # [y, x]
  usable = jnp.abs(diff) > jnp.float32(GCD_MIN_DIFFERENCE)
  divisor = jnp.where(usable, diff, 1.0)
  score, _ = jax.lax.scan(lambda acc, b_c: (acc + jnp.remainder(b_c, divisor), None), jnp.zeros_like(diff), b)
  score = jnp.where(usable, score, jnp.inf)
  row_best = jnp.min(score, axis=1)
  row_pick = jnp.argmin(score, axis=1)                                      # first of equal scores in the row
  running = jax.lax.cummin(row_best)
  c = b.shape[0]
  earlier = jnp.arange(c)[None, :] <= jnp.arange(c)[:, None]
  best_row = jnp.argmax(earlier & (row_best[None, :] == running[:, None]), axis=1)   # the first row reaching it
  best = diff[best_row, row_pick[best_row]]
  return jnp.where(jnp.isfinite(running), -best, 0.0)


@register("gcd", signal="bias", summary="GCD: per-class impacts from differences of bias entries (HAR code, older)")
def gcd(grads: LastLayerGrads, num_samples: NumSamples) -> jax.Array:
  """The HAR code's `gcd` strategy (its older commit's default; the thesis's "GCDB"; spec 2.7).

  Idea: differences of bias-gradient entries are multiples of one instance's impact, so their "greatest common
  divisor" estimates it. As the reference runs it:
  1. candidates from `gcd_candidates` (one per sorted position); a candidate 0 or one that does not divide every
     g_b[c] (|g_b[c] mod candidate| > 0.01) is replaced by EBI's m0 = sum_{g_b < 0} g_b / N, and so is a positive
     one;
  2. stage 1: V = {c : g_b[c] < 0} in class-index order, one label each (the first N if more), g_b not raised;
  3. stage 2: until N labels, take argmin g_b and raise it by |candidate[argmin]|: the reference indexes the
     candidates, built per *sorted position*, with the *class index*, and so does this function.
  Deviation: with |V| > N the reference returns every class of V; here the first N (as `bias_corrected`).

  >>> g = LastLayerGrads(kernel=jnp.zeros((2, 4)), bias=jnp.array([-0.25, -0.125, 0.125, 0.25]))
  >>> gcd_candidates(g).tolist(), gcd(g, 8).tolist()
  ([-0.125, -0.125, 0.375, 0.5], [5, 3, 0, 0])
  """
  n = _common.validate(grads, num_samples, "gcd", needs_bias=True, needs_kernel=False)
  b = _bias(grads)
  present = b < 0
  m0 = jnp.sum(jnp.where(present, b, 0.0)) / _common.as_float(n)
  cand = gcd_candidates(grads)
  safe = jnp.where(cand == 0, 1.0, cand)
  divides = (cand != 0) & jnp.all(jnp.abs(jnp.remainder(b[None, :], safe[:, None]))
                                  <= jnp.float32(GCD_DIVIDES_TOLERANCE), axis=1)
  cand = jnp.where(divides, cand, m0)
  cand = jnp.where(cand > 0, m0, cand)
  stage1 = _common.keep_first(present.astype(jnp.int32), n)
  counts = _common.greedy_fill(b, stage1, cand, n)
  return _common.guard_nonfinite(counts, grads, num_samples=num_samples)


@register("llbg", signal="bias", summary="LLBG as the HAR paper ran it (llbgAVG: LLG-style impact)")
def llbg(grads: LastLayerGrads, num_samples: NumSamples) -> jax.Array:
  """LLBG as the HAR paper ran it (`llbgAVG`, spec 2.4): the default `llbg`.

  V = {c : g_b[c] < 0} taken in index order (the first N if more); impact m = sum_{c in V} g_b[c] * (1 + 1/C) / N
  (LLG's estimate applied to the bias); V raised by |m|; greedy stage 2 raising the selected class.
  Equals EBI with the impact scaled by (1 + 1/C) and stage 1 in index order without the cap.
  For Gat and Sharif's own impact use `llbg_original`.
  """
  n = _common.validate(grads, num_samples, "llbg", needs_bias=True, needs_kernel=False)
  b = _bias(grads)
  c = b.shape[0]
  present = b < 0
  stage1 = _common.keep_first(present.astype(jnp.int32), n)
  impact = jnp.sum(jnp.where(present, b, 0.0)) * (1.0 + 1.0 / c) / n
  counts = _common.two_stage(b, present, impact, n, stage1_counts=stage1)
  return _common.guard_nonfinite(counts, grads, num_samples=num_samples)


@register("llbg_original", signal="bias",
          summary="LLBG with Gat & Sharif's impact -(1-conf)/B and offset S/C")
def llbg_original(grads: LastLayerGrads, num_samples: NumSamples, *, confidence: float = 0.0,
                  local_batch_size: Optional[int] = None, local_steps: int = 1) -> jax.Array:
  """LLBG with Gat and Sharif's own impact (spec 2.5, the HAR code's `llbgSGD`).

  impact m = -(1 - confidence) / B with B = `local_batch_size` (default N; the per-step batch of multi-step
  updates); V = {g_b < 0} in index order raised by |m|; then every entry is shifted by S / C (the untrained-model
  offset; a uniform shift, so it cannot change any argmin); greedy stage 2 with |m|.

  Args:
    confidence: the assumed average confidence gamma of the correct class (0 for untrained models).
    local_batch_size: B, samples per local step (None = num_samples).
    local_steps: S, local steps behind the update (1 for FedSGD).
  Like N, B and S may be traced integer scalars (one per update under vmap: clients of other sizes run other B
  and S); under jit a traced B or S below 1 gives INVALID_COUNT rows.
  """
  n = _common.validate(grads, num_samples, "llbg_original", needs_bias=True, needs_kernel=False)
  if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 <= confidence < 1.0:
    raise ValueError(f"llbg_original: confidence must be a number in [0, 1), got {confidence!r}.")
  bsz = n if local_batch_size is None else _common.check_num_samples(local_batch_size, "llbg_original",
                                                                      name="local_batch_size")
  steps = _common.check_num_samples(local_steps, "llbg_original", name="local_steps")
  b = _bias(grads)
  c = b.shape[0]
  present = b < 0
  impact = jnp.asarray(-(1.0 - confidence) / bsz, jnp.float32)
  stage1 = _common.keep_first(present.astype(jnp.int32), n)
  values = jnp.where(present, b - impact, b) - steps / c
  counts = _common.greedy_fill(values, stage1, impact, n)
  counts = jnp.where(_common.num_samples_ok(local_batch_size if local_batch_size is not None else 1)
                     & _common.num_samples_ok(local_steps), counts, _common.INVALID_COUNT)
  return _common.guard_nonfinite(counts, grads, num_samples=num_samples)


@register("ilrg_uniform", signal="bias", requires=("key",),
          summary="iLRG with uniform probabilities, as the HAR code runs it")
def ilrg_uniform(grads: LastLayerGrads, num_samples: NumSamples, *, key: Optional[jax.Array] = None,
                 max_samples: Optional[int] = None) -> jax.Array:
  """iLRG with uniform class probabilities, as the HAR code runs it (`iLRG`, spec 2.6).

  Solves the iLRG system with every class-probability vector set to 1/C. Its least-squares solution has the
  closed form x_i = N/C - N (g_b[i] - mean(g_b)) (equal to the reference's float64 pinv; the mean term is 0
  without noise). Counts: round(max(x, 0)) half-to-even, counts > N set to 0, labels taken in class order up to N,
  and any shortfall padded with uniformly random labels drawn with `key` (the reference's padding).

  Exact for models whose average softmax output is uniform; biased for trained models; not invariant to
  rescaling the gradient (clipping breaks it). A traced `num_samples` needs `max_samples` (the padding's draw).
  """
  n = _common.validate(grads, num_samples, "ilrg_uniform", needs_bias=True, needs_kernel=False,
                       max_samples=max_samples)
  _common.require_max_samples(num_samples, max_samples, "ilrg_uniform")
  key = _common.require_key(key, "ilrg_uniform")
  b = _bias(grads)
  c = b.shape[0]
  x = n / c - n * (b - jnp.mean(b))
  r = jnp.round(jnp.maximum(x, 0.0))
  r = jnp.where(r > n, 0.0, r).astype(jnp.int32)
  counts = _common.keep_first(r, n)
  counts = _common.random_fill(counts, n, c, key, max_samples)
  return _common.guard_nonfinite(counts, grads, num_samples=num_samples, max_samples=max_samples)


def class_embeddings(grads: LastLayerGrads) -> jax.Array:
  """iLRG step 1: class embeddings e_c = dL/dW[:, c] / dL/db[c] (f32[C, D]); 0 where dL/db[c] == 0."""
  _common.check_grads(grads, "class_embeddings", needs_bias=True)
  kernel = grads.kernel.astype(jnp.float32)
  b = _bias(grads)
  safe = jnp.where(b == 0, 1.0, b)
  return jnp.where((b == 0)[:, None], 0.0, (kernel / safe[None, :]).T)


def ilrg_solution(grads: LastLayerGrads, num_samples: NumSamples, *, head: LastLayerParams) -> jax.Array:
  """iLRG steps 1-3: the real-valued least-squares count estimate f32[C] (before clipping and rounding)."""
  if not isinstance(head, LastLayerParams):
    raise TypeError(f"ilrg: head must be a jaxleak.LastLayerParams, got {type(head).__name__}.")
  n = _common.validate(grads, num_samples, "ilrg", needs_bias=True, extra={"head": head})
  if head.kernel.shape != grads.kernel.shape:
    raise ValueError(f"ilrg: head.kernel {head.kernel.shape} must match grads.kernel {grads.kernel.shape}.")
  b = _bias(grads)
  c = b.shape[0]
  emb = class_embeddings(grads)                                            # [C, D]
  logits = emb @ head.kernel.astype(jnp.float32)
  if head.bias is not None:
    logits = logits + head.bias.astype(jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1)                                  # probs[j, i] = p_j[i]
  a = jnp.concatenate([jnp.ones((1, c), jnp.float32), probs.T - jnp.eye(c, dtype=jnp.float32)], axis=0)
  v = jnp.concatenate([jnp.reshape(_common.as_float(n), (1,)).astype(jnp.float32), n * b])
  return jnp.linalg.pinv(a) @ v


@register("ilrg", signal="bias", requires=("head",),
          summary="iLRG (Ma et al.): embeddings, head probabilities, pinv")
def ilrg(grads: LastLayerGrads, num_samples: NumSamples, *, head: LastLayerParams) -> jax.Array:
  """iLRG (Ma et al., ICLR 2023): label counts from a linear system built with the head's parameters.

  1. class embeddings e_c = dL/dW[:, c] / dL/db[c] (`class_embeddings`);
  2. class-average probability vectors p_c = softmax(e_c @ W + b) through the head being attacked;
  3. least-squares (pseudo-inverse) solution of  sum_c k_c = N  and  sum_j k_j p_j[i] - k_i = N g_b[i]  for all i;
  4. negatives clipped to 0, rounded, then corrected one unit at a time (largest residual up, smallest residual
     down) until the counts sum to N.

  Args:
    head: the classifier head's params (kernel f32[D, C], bias f32[C]) at the attacked global model.

  Ties in the correction step (equal residuals) go to the lower class index.
  """
  n = _common.check_num_samples(num_samples, "ilrg")
  x = ilrg_solution(grads, num_samples, head=head)
  x = jnp.clip(jnp.nan_to_num(x, nan=0.0), 0.0, _common.as_float(n))
  r = jnp.round(x).astype(jnp.int32)

  def not_done(r):
    return jnp.sum(r) != n

  def fix_one(r):
    resid = x - r
    up = jnp.sum(r) < n
    i_up = jnp.argmax(resid)
    i_down = jnp.argmin(jnp.where(r > 0, resid, jnp.inf))
    i = jnp.where(up, i_up, i_down)
    return r.at[i].add(jnp.where(up, 1, -1))

  counts = jax.lax.while_loop(not_done, fix_one, r)
  return _common.guard_nonfinite(counts, grads, head, num_samples=num_samples)
