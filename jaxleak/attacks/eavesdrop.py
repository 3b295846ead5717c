"""The Eavesdrop paper's attacks (Wang et al., arXiv 1910.06044) on an *aggregated* update: pure jnp functions.

Notation (sec. III). The attacker downloads G_t and G_{t+1}; `global_update` = G_{t+1} - G_t restricted to the
head kernel, f32[D, C] (column i = the input weights W_in^{Li} of output neuron i). From G_t it trains one local
model per label on auxiliary data of that label alone (`federated.per_label_updates`), giving
U f32[C, D, C]: U[j, :, i] is the update of W_in^{Li} when training on label j. Then, for label i,
  W_p = U[i, :, i]                  (the increase when label i is trained)       -> `w_p[i]`
  W_n = mean_{j != i} U[j, :, i]    (the mean decrease caused by the other labels) -> `w_n[i]`
`num_selected` is K = N_p * P, `labels_per_client` is N_L, the mean number of labels a selected client owns.

The model behind all three attacks is linear superposition (Eq. 4): K clients own K * N_L label slots; x of
them are label i, so  K * global_update[:, i] ~ x * W_p + (K * N_L - x) * W_n.
Class Sniffing and Quantity Inference are vmappable and jittable; Whole Determination's clustering runs on the
host (scipy), its ratio vectors are jnp.

Example, where Eq. 4 holds exactly: C = 4 labels, D = 2 weights per output neuron, training label j moves neuron
i's weights by 1 when j = i and by -0.2 otherwise (W_p = 1, W_n = -0.2); K = 10 selected clients own N_L = 2
labels each, x = [10, 6, 4, 0] slots of each label, so G[:, i] = (1.2 x_i - 4) / 10. Eq. 5 inverts this:
x_i = K (G[:, i] - N_L W_n) / (W_p - W_n), and Class Sniffing's score is the same number fitted over the D weights.

>>> import jax.numpy as jnp
>>> U = jnp.where(jnp.eye(4, dtype=bool)[:, None, :], 1.0, -0.2) * jnp.ones((4, 2, 4))    # [C, D, C]
>>> G = jnp.tile((1.2 * jnp.array([10.0, 6.0, 4.0, 0.0]) - 4) / 10, (2, 1))              # [D, C]
>>> class_sniffing(G, U, num_selected=10, labels_per_client=2).present.tolist()
[True, True, True, False]
>>> q = quantity_inference(G, U, num_selected=10, labels_per_client=2)
>>> jnp.round(q.estimate).astype(int).tolist(), bool(jnp.max(jnp.abs(q.estimate - jnp.round(q.estimate))) < 1e-5)
([10, 6, 4, 0], True)
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak.types import is_concrete


def _check(global_update, label_updates, num_selected=None, labels_per_client=None, **thresholds):
  """Shapes always; values (finite updates, K > 0, 0 < N_L <= C, the thresholds) when they are concrete. Under
  jit they cannot be inspected: a NaN update then gives NaN scores/estimates (Class Sniffing's `present` is
  False where its score is NaN)."""
  if np.ndim(label_updates) != 3 or np.shape(label_updates)[0] != np.shape(label_updates)[2]:
    raise ValueError(f"label_updates must be [C, D, C] (trained label, feature, output neuron); got "
                     f"{np.shape(label_updates)}.")
  c = np.shape(label_updates)[0]
  if c < 2:
    raise ValueError(f"label_updates: need at least 2 labels (W_n averages the other labels' updates); got C={c}.")
  if global_update is not None and np.shape(global_update) != np.shape(label_updates)[1:]:
    raise ValueError(f"global_update must be the head-kernel update [D, C] = {np.shape(label_updates)[1:]}; got "
                     f"{np.shape(global_update)}.")
  for name, arr in (("global_update", global_update), ("label_updates", label_updates)):
    dtype = None if arr is None else getattr(arr, "dtype", None) or np.asarray(arr).dtype
    if arr is not None and not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"{name} has dtype {dtype}; model updates are real-valued: pass floating-point "
                      "arrays (e.g. .astype(jnp.float32)), and check where integers came from.")
    if arr is not None and is_concrete(arr) and not bool(np.all(np.isfinite(np.asarray(arr)))):
      raise ValueError(f"{name} contains NaN or Inf; an attack on it is meaningless. Check the updates "
                       "(a diverged model, or a learning rate too large for the auxiliary training).")
  rules = {"num_selected": (num_selected, lambda v: v > 0, "> 0 (K = N_p * P, the clients selected per round)"),
           "labels_per_client": (labels_per_client, lambda v: 0 < v <= c,
                                 f"in (0, C = {c}] (N_L, the mean number of labels a client owns)")}
  for name, (value, zero_allowed) in thresholds.items():      # margin >= 0; ratio_threshold, abort_std > 0
    rules[name] = (value, (lambda v: v >= 0) if zero_allowed else (lambda v: v > 0), ">= 0" if zero_allowed else "> 0")
  for name, (value, ok, allowed) in rules.items():
    if value is None or not is_concrete(value):
      continue
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0:
      raise TypeError(f"{name} must be a number {allowed}; got {value!r}.")
    v = float(value)
    if not (np.isfinite(v) and ok(v)):
      raise ValueError(f"{name} must be a finite number {allowed}; got {value!r}.")


def _check_signal(global_update, label_updates) -> None:
  """Eagerly (concrete arrays): refuses an all-zero aggregated update (the same model downloaded twice: Class
  Sniffing would call every label present, Quantity Inference give each K N_L / C) and label updates that cannot
  tell labels apart (W_p == W_n for every label: every estimate would be 0)."""
  if is_concrete(global_update) and not np.any(np.asarray(global_update)):
    raise ValueError("global_update is all zero: the two global models are the same, so this round says nothing "
                     "about its labels. Pass G_{t+1} - G_t of two consecutive rounds.")
  if is_concrete(label_updates):
    with jax.ensure_compile_time_eval():           # concrete even inside jit (jnp would otherwise stage tracers)
      w_p, w_n = positive_negative(label_updates)
    if not np.any(np.asarray(w_p) != np.asarray(w_n)):
      raise ValueError("label_updates do not tell the labels apart: training label i moves label i's weights "
                       "exactly as the other labels do (W_p == W_n for every label), so every estimate would be 0. "
                       "Check the auxiliary training (lr > 0, each label's own examples).")


def positive_negative(label_updates: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(W_p, W_n), each f32[C, D]: row i is W_p / W_n of label i's input weights (see module docstring)."""
  _check(None, label_updates)
  label_updates = jnp.asarray(label_updates)
  c = label_updates.shape[0]
  diag = jnp.arange(c)
  w_p = label_updates[diag, :, diag]                                  # [C, D]
  w_n = (jnp.sum(label_updates, axis=0).T - w_p) / (c - 1)            # [C, D]
  return w_p, w_n


def class_sniffing_thresholds(label_updates: jax.Array, num_selected, labels_per_client) -> jax.Array:
  """Algorithm 1: Th_low^i = N_p * P * N_L * mean_{j != i}(U[j, :, i]), f32[C, D], the summed update of label
  i's input weights when no selected client trains label i (the 'worst case')."""
  _check(None, label_updates, num_selected, labels_per_client)
  _, w_n = positive_negative(label_updates)
  return num_selected * labels_per_client * w_n


class SniffingResult(NamedTuple):
  """present: bool[C]; score: f32[C], the least-squares number of label slots above the absent threshold."""
  present: jax.Array
  score: jax.Array


def class_sniffing(global_update: jax.Array, label_updates: jax.Array, num_selected, labels_per_client, *,
                   margin: float = 0.5) -> SniffingResult:
  """Class Sniffing: is label i in this round's training?

  The paper says a label is present when its weights' update is 'higher than Th_low' and absent when 'close to'
  it. Concretely: one client owning label i moves the summed update by W_p - W_n above Th_low, so we fit
  K * global_update[:, i] - Th_low^i ~ s * (W_p - W_n) by least squares over the D weights and call the label
  present when s > `margin` (half a client by default).
  """
  _check(global_update, label_updates, num_selected, labels_per_client, margin=(margin, True))
  _check_signal(global_update, label_updates)
  global_update = jnp.asarray(global_update)
  w_p, w_n = positive_negative(label_updates)
  excess = num_selected * global_update.T - num_selected * labels_per_client * w_n     # [C, D]
  direction = w_p - w_n
  score = jnp.sum(excess * direction, axis=1) / jnp.maximum(jnp.sum(direction * direction, axis=1), 1e-30)
  return SniffingResult(present=score > margin, score=score)


class QuantityResult(NamedTuple):
  """Per label: estimate f32 (X_*, clients owning it), std f32 of the per-weight x_i, num_weights i32 (size of
  N_int^**), aborted bool (no weight left, or spread too large). Aborted estimates are still reported."""
  estimate: jax.Array
  std: jax.Array
  num_weights: jax.Array
  aborted: jax.Array


def per_weight_estimates(global_update: jax.Array, label_updates: jax.Array, num_selected, labels_per_client,
                         *, ratio_threshold: float = 0.5) -> tuple[jax.Array, jax.Array]:
  """Algorithm 2, lines 9-27, for every label at once: (x f32[C, D], kept bool[C, D]).

  x[i, d] = K * (G[d, i] - N_L * w_n) / (w_p - w_n)  (Eq. 5); kept = R_np = |w_n| / |w_p| <= Th_R (lines 12-19)
  and 0 <= x <= K (lines 20-27).
  """
  _check(global_update, label_updates, num_selected, labels_per_client, ratio_threshold=(ratio_threshold, False))
  _check_signal(global_update, label_updates)
  global_update = jnp.asarray(global_update)
  w_p, w_n = positive_negative(label_updates)
  ratio_ok = jnp.abs(w_n) <= ratio_threshold * jnp.abs(w_p)          # R_np <= Th_R without dividing by 0
  denom = w_p - w_n
  safe = jnp.where(denom == 0, 1.0, denom)
  x = num_selected * (global_update.T - labels_per_client * w_n) / safe
  kept = ratio_ok & (denom != 0) & (x >= 0) & (x <= num_selected) & jnp.isfinite(x)
  return x, kept


def quantity_inference(global_update: jax.Array, label_updates: jax.Array, num_selected, labels_per_client, *,
                       ratio_threshold: float = 0.5, abort_std: float = 0.25) -> QuantityResult:
  """Quantity Inference (Algorithm 2) for every label: how many of the K selected clients own it.

  X_* is the mean of the kept per-weight estimates. The paper aborts 'when the standard deviation of the x's is
  large' without a number; here the attack aborts when std > `abort_std` * K (or no weight is kept).
  """
  _check(global_update, label_updates, abort_std=(abort_std, False))
  x, kept = per_weight_estimates(global_update, label_updates, num_selected, labels_per_client,
                                 ratio_threshold=ratio_threshold)
  n = jnp.sum(kept, axis=1)
  w = kept.astype(x.dtype)
  mean = jnp.sum(x * w, axis=1) / jnp.maximum(n, 1)
  std = jnp.sqrt(jnp.sum(w * (x - mean[:, None]) ** 2, axis=1) / jnp.maximum(n, 1))
  aborted = (n == 0) | (std > abort_std * num_selected)
  return QuantityResult(estimate=mean, std=std, num_weights=n.astype(jnp.int32), aborted=aborted)


def log_ratio(label_updates: jax.Array, eps: float = 1e-30) -> jax.Array:
  """Whole Determination's log R_pn per label, f32[C]: log(||W_p|| / ||W_n||) (L2 norms over the D input
  weights, W_n the mean update from the other labels). Rarely trained labels have the larger ratio (Eq. 13:
  the model predicts them with small probability, so other labels' samples barely push their weights).
  `eps` (> 0, added to both norms) keeps an all-zero update finite."""
  if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(eps) and eps > 0):
    raise ValueError(f"log_ratio: eps must be a small finite number > 0 (added to both norms), got {eps!r}.")
  w_p, w_n = positive_negative(label_updates)
  return jnp.log(jnp.linalg.norm(w_p, axis=1) + eps) - jnp.log(jnp.linalg.norm(w_n, axis=1) + eps)


def ratio_vectors(label_updates_over_rounds: jax.Array) -> jax.Array:
  """V_pn, f32[C, R]: row i = label i's log R_pn in each of R consecutive rounds (U stacked as [R, C, D, C]);
  the paper tracks this ratio over rounds (Figs. 4-5) and clusters one vector per label."""
  label_updates_over_rounds = jnp.asarray(label_updates_over_rounds)
  if label_updates_over_rounds.ndim != 4:
    raise ValueError(f"expected per-round label updates [R, C, D, C]; got {label_updates_over_rounds.shape}.")
  return jax.vmap(log_ratio)(label_updates_over_rounds).T


#: scipy's hierarchical linkage methods (all with Euclidean distances here).
LINKAGE_METHODS = ("ward", "single", "complete", "average", "weighted", "centroid", "median")


def cluster_labels(vectors, num_clusters: int | None = None, *, method: str = "ward",
                   max_clusters: int | None = None) -> np.ndarray:
  """Hierarchical clustering (Euclidean distance; Ward linkage by default, any scipy method) of the rows of
  `vectors` [C, F] -> i32[C] cluster ids, numbered in order of first appearance. With num_clusters=None the
  number is chosen where the merge height jumps most (largest ratio between consecutive merge heights,
  2..max_clusters clusters; default C - 1). Host-side (scipy).
  """
  from scipy.cluster import hierarchy

  if method not in LINKAGE_METHODS:
    raise ValueError(f"method: unknown linkage {method!r}; valid: {', '.join(LINKAGE_METHODS)}.")
  v = np.asarray(vectors, np.float64)
  c = v.shape[0] if v.ndim else 0
  if v.ndim != 2 or c < 2:
    raise ValueError(f"need vectors [C >= 2, F]; got {v.shape}.")
  for name, value in (("num_clusters", num_clusters), ("max_clusters", max_clusters)):
    if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))):
      raise TypeError(f"{name} must be an integer (or None), got {value!r}.")
  if max_clusters is not None and max_clusters < 2:
    raise ValueError(f"max_clusters must be at least 2 (num_clusters=None chooses 2..max_clusters), got "
                     f"{max_clusters}.")
  if num_clusters is None and not 2 <= min(max_clusters or c - 1, c - 1):
    raise ValueError(f"num_clusters=None chooses between 2 and max_clusters (default C - 1) clusters; with C = {c} "
                     f"labels and max_clusters={max_clusters} there is no choice: give num_clusters, or "
                     "max_clusters >= 2 with C >= 3 labels.")
  if not np.all(np.isfinite(v)):
    raise ValueError("ratio vectors contain NaN/inf (an update of exactly zero?); cannot cluster.")
  tree = hierarchy.linkage(v, method=method, metric="euclidean")
  if num_clusters is None:
    heights = tree[:, 2]                                             # ascending, C - 1 merges
    hi = min(max_clusters or c - 1, c - 1)
    ks = np.arange(2, hi + 1)
    below = np.maximum(heights[c - 1 - ks], 1e-12)
    num_clusters = int(ks[np.argmax(heights[c - ks] / below)])
  if not 1 <= num_clusters <= c:
    raise ValueError(f"num_clusters must be in [1, {c}], got {num_clusters}.")
  raw = hierarchy.fcluster(tree, t=num_clusters, criterion="maxclust")
  return canonical_partition(raw)


def canonical_partition(assignment) -> np.ndarray:
  """Relabels a cluster assignment so ids count 0, 1, ... in order of first appearance."""
  assignment = np.asarray(assignment)
  if assignment.ndim != 1:
    raise ValueError(f"an assignment is one cluster id per label, [C]; got shape {assignment.shape}.")
  ids: dict = {}
  return np.array([ids.setdefault(a, len(ids)) for a in assignment.tolist()], np.int32)


def group_separation(vectors, groups) -> np.ndarray:
  """How far apart label groups lie in Whole Determination's ratio space, in units of the label-to-label spread:
  d[a, b] = |mean_a - mean_b| / s_w, where m_i is label i's mean log ratio over its vector (vectors f32[C, W]),
  mean_g the mean of m over group g's labels (groups i32[C], 0..G-1, each non-empty) and s_w the pooled
  within-group standard deviation of m (sum over groups of squared deviations, over C - G). Returns f64[G, G]
  (0 on the diagonal; inf when s_w = 0 and the means differ). Around d >= 3 a clustering separates two groups
  reliably; around 1 they overlap."""
  v = np.asarray(vectors, np.float64)
  g = np.asarray(groups)
  if v.ndim != 2 or g.shape != (v.shape[0],):
    raise ValueError(f"expected vectors [C, W] and groups [C]; got {v.shape} and {g.shape}.")
  ids = np.unique(g)
  if not np.issubdtype(g.dtype, np.integer) or ids.tolist() != list(range(len(ids))):
    raise ValueError(f"groups must be integer group ids 0..G-1, each used (row/column g of the result is group g); "
                     f"got the ids {ids.tolist()}.")
  if not np.all(np.isfinite(v)):
    raise ValueError("group_separation: the ratio vectors contain NaN/inf (an update of exactly zero?); "
                     "there is no spread to measure.")
  m = v.mean(axis=1)
  if len(ids) >= len(m):
    raise ValueError("group_separation needs at least one group with two labels (a within-group spread).")
  means = np.array([m[g == k].mean() for k in ids])
  s_w = np.sqrt(sum(((m[g == k] - mk) ** 2).sum() for k, mk in zip(ids, means)) / (len(m) - len(ids)))
  gap = np.abs(means[:, None] - means[None, :])
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(gap == 0, 0.0, gap / s_w)


def whole_determination_from_ratios(vectors, num_clusters: int | None = None, *, method: str = "ward") -> np.ndarray:
  """Whole Determination on ratio vectors V_pn f32[C, R] (label i's log R_pn in R rounds, e.g. collected round by
  round with `log_ratio`, so the [R, C, D, C] updates need not be kept): groups of labels with about the same
  number of training examples, i32[C] numbered in order of first appearance."""
  return cluster_labels(vectors, num_clusters, method=method)


def whole_determination(label_updates_over_rounds, num_clusters: int | None = None, *,
                        method: str = "ward") -> np.ndarray:
  """Whole Determination: groups of labels with about the same number of training examples, i32[C], from the
  attacker's per-label updates of R >= 1 rounds, [R, C, D, C] (or one round's [C, D, C])."""
  u = jnp.asarray(label_updates_over_rounds)
  return whole_determination_from_ratios(ratio_vectors(u[None] if u.ndim == 3 else u), num_clusters, method=method)
