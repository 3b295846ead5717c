"""Leakage metrics from true and predicted label counts, vectorised over any leading batch axes.

Inputs are count vectors i32[..., C] (true counts sum to N > 0 per row, and a prediction row to the same N, as
every attack's counts do). A predicted row of INVALID_COUNT (-1, an attack's sentinel for a non-finite update)
scores NaN in every per-batch metric. Anything else impossible (negative, fractional or non-finite counts, a true
row of no samples, a prediction of another total, client ids out of range) is refused with a ValueError when the
arrays are concrete; under jit a true row of no samples scores NaN in lnacc and leacc.

Per batch (spec 6):
  lnacc:  sum_c min(true_c, pred_c) / N                         (label number accuracy)
  leacc:  |{c: pred_c>0} & {c: true_c>0}| / |{c: true_c>0}|     (existence recall, as the HAR code computes LeAcc)
  symmetric_existence_accuracy: 1 - mean_c |1[true_c>0] - 1[pred_c>0]|  (the HAR paper's Eq. 4 read as an
          accuracy over all C classes: extra predicted classes are penalised, unlike leacc)
Per client: ClassAcc = nan-mean over classes of (sum over the client's batches of min(true, pred)) / (sum of true);
classes absent from all of a client's batches are excluded.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak.types import is_concrete, is_int, values_outside


def _check_values(x, what: str, allow_invalid_rows: bool) -> None:
  """Finite, integral, non-negative counts (checked when concrete; under jit they cannot be inspected)."""
  if not is_concrete(x):
    return
  a = np.asarray(x)
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{what} counts must be finite; got NaN or Inf.")
  if not np.all(a == np.round(a)):
    raise ValueError(f"{what} counts must be integers (numbers of samples); got fractional values.")
  negative = a < 0
  if allow_invalid_rows:                       # an attack's invalid update: a whole row of INVALID_COUNT (-1)
    negative = negative & ~np.all(a == -1, axis=-1, keepdims=True)
  if np.any(negative):
    raise ValueError(f"{what} counts must be non-negative" + (" (a whole row of -1 marks an invalid update)"
                                                               if allow_invalid_rows else "") + ".")


def _check_counts(true_counts, pred_counts):
  if np.shape(true_counts) != np.shape(pred_counts):
    raise ValueError(f"true counts {np.shape(true_counts)} and predicted counts {np.shape(pred_counts)} must "
                     "have the same shape [..., C].")
  if np.ndim(true_counts) < 1:
    raise ValueError("counts must have a class axis: shape [..., C].")
  _check_values(true_counts, "true", allow_invalid_rows=False)
  _check_values(pred_counts, "predicted", allow_invalid_rows=True)
  if is_concrete(true_counts) and np.size(true_counts):
    empty = np.flatnonzero(np.sum(np.asarray(true_counts), axis=-1).reshape(-1) == 0)
    if empty.size:
      raise ValueError(f"true counts: {empty.size} row(s) sum to 0 (the first at flat row {empty[0]}): a batch of no "
                       "samples has no labels to score; drop those rows (or mask them out) before scoring.")
  if is_concrete(true_counts) and is_concrete(pred_counts) and np.size(true_counts):
    t = np.asarray(true_counts).reshape(-1, np.shape(true_counts)[-1])
    p = np.asarray(pred_counts).reshape(t.shape)
    off = np.flatnonzero((t.sum(-1) != p.sum(-1)) & ~np.all(p == -1, axis=-1))
    if off.size:
      r = off[0]
      raise ValueError(f"predicted counts: {off.size} row(s) sum to another total than the true counts (the first, "
                       f"flat row {r}: {p[r].sum():g} predicted for {t[r].sum():g} samples). An attack's counts sum "
                       "to the N it was given: pass each batch's own N, and the rows in the same order.")


def _valid(pred):
  return jnp.all(pred >= 0, axis=-1)


def lnacc(true_counts: jax.Array, pred_counts: jax.Array) -> jax.Array:
  """Label number accuracy per row: f32[...]."""
  _check_counts(true_counts, pred_counts)
  t, p = jnp.asarray(true_counts), jnp.asarray(pred_counts)
  n = jnp.sum(t, axis=-1)
  acc = jnp.sum(jnp.minimum(t, p), axis=-1) / jnp.maximum(n, 1)
  return jnp.where(_valid(p) & (n > 0), acc, jnp.nan)


def leacc(true_counts: jax.Array, pred_counts: jax.Array) -> jax.Array:
  """Label existence recall per row (the HAR code's LeAcc): f32[...]."""
  _check_counts(true_counts, pred_counts)
  t, p = jnp.asarray(true_counts) > 0, jnp.asarray(pred_counts) > 0
  present = jnp.sum(t, axis=-1)
  acc = jnp.sum(t & p, axis=-1) / jnp.maximum(present, 1)
  return jnp.where(_valid(jnp.asarray(pred_counts)) & (present > 0), acc, jnp.nan)


def symmetric_existence_accuracy(true_counts: jax.Array, pred_counts: jax.Array) -> jax.Array:
  """1 - mean over classes of |1[true>0] - 1[pred>0]| per row (the HAR paper's Eq. 4 as an accuracy)."""
  _check_counts(true_counts, pred_counts)
  t, p = jnp.asarray(true_counts) > 0, jnp.asarray(pred_counts) > 0
  acc = 1.0 - jnp.mean((t != p).astype(jnp.float32), axis=-1)
  return jnp.where(_valid(jnp.asarray(pred_counts)), acc, jnp.nan)


def sorted_pairing_confusion(true_counts: jax.Array, pred_counts: jax.Array) -> jax.Array:
  """The HAR code's confusion matrix of a batch: i32[..., C, C], [true class, predicted class].

  Both label multisets are written out sorted and paired position by position (spec 6); entry [i, j] counts the
  positions where the sorted truth holds class i and the sorted prediction class j, i.e. the overlap of the
  intervals [T_{i-1}, T_i) and [P_{j-1}, P_j) of the cumulative counts. Rows sum to the true counts, columns to
  the predicted ones. An INVALID_COUNT row gives all zeros (it carries no prediction).

  >>> sorted_pairing_confusion(jnp.array([2, 1, 0]), jnp.array([1, 0, 2])).tolist()
  [[1, 0, 1], [0, 0, 1], [0, 0, 0]]
  """
  _check_counts(true_counts, pred_counts)
  t, p = jnp.asarray(true_counts), jnp.asarray(pred_counts)
  t_hi, p_hi = jnp.cumsum(t, axis=-1), jnp.cumsum(p, axis=-1)
  t_lo, p_lo = t_hi - t, p_hi - p
  overlap = (jnp.minimum(t_hi[..., :, None], p_hi[..., None, :])
             - jnp.maximum(t_lo[..., :, None], p_lo[..., None, :]))
  return jnp.where(_valid(p)[..., None, None], jnp.maximum(overlap, 0), 0).astype(jnp.int32)


class ClientMetrics(NamedTuple):
  """Per-client aggregates (leading axis = client), f32.

  lnacc, leacc, symmetric_existence: mean over the client's batches; class_acc: ClassAcc;
  class_correct / class_total: i32[clients, C] summed over batches; num_batches: i32[clients].
  """
  lnacc: jax.Array
  leacc: jax.Array
  symmetric_existence: jax.Array
  class_acc: jax.Array
  class_correct: jax.Array
  class_total: jax.Array
  num_batches: jax.Array


def _segment_sum(x: jax.Array, ids: jax.Array, num_segments: int) -> jax.Array:
  """`jax.ops.segment_sum(x, ids, num_segments)` over axis 0. Off the CPU a float one is a masked sum instead: a
  float segment sum is a scatter-add, which XLA:GPU runs with atomics or, asked for determinism
  (`jaxleak.gpu_numerics`), as a loop over the K entries. NaN stays in its own segment either way. On XLA:CPU (and
  for integers) it is segment_sum, so CPU results stay bit for bit those of earlier versions."""
  if jax.default_backend() == "cpu" or not jnp.issubdtype(x.dtype, jnp.floating):
    return jax.ops.segment_sum(x, ids, num_segments=num_segments)
  member = ids[:, None] == jnp.arange(num_segments)                      # [K, segments]
  member = member.reshape(member.shape + (1,) * (x.ndim - 1))
  return jnp.sum(jnp.where(member, x[:, None], jnp.zeros((), x.dtype)), axis=0)


def client_metrics(true_counts: jax.Array, pred_counts: jax.Array, client_ids: jax.Array,
                   num_clients: int) -> ClientMetrics:
  """Aggregates per-batch metrics to per-client metrics with segment sums.

  Args:
    true_counts, pred_counts: i32[K, C] for K batches.
    client_ids: i32[K], the client of each batch, in [0, num_clients).
    num_clients: static number of clients (segments).

  The per-client means divide by the number of attacked batches (the HAR code divides by ceil(n/100), which
  biases them low by up to ~2 %; spec 10.7). A client with no batches gets NaN. Invalid (NaN) batches count as
  NaN, so a client with one gets NaN means; its ClassAcc ignores invalid batches' rows.
  """
  _check_counts(true_counts, pred_counts)
  if np.ndim(true_counts) != 2:
    raise ValueError(f"client_metrics expects counts of shape [K, C], got {np.shape(true_counts)}.")
  if np.shape(client_ids) != np.shape(true_counts)[:1]:
    raise ValueError(f"client_ids must have shape [K]={np.shape(true_counts)[:1]}, got {np.shape(client_ids)}.")
  if is_concrete(client_ids) and np.size(client_ids):
    ids_np = np.asarray(client_ids)
    if not np.issubdtype(ids_np.dtype, np.integer) or ids_np.min() < 0 or ids_np.max() >= num_clients:
      raise ValueError(f"client_ids must be in [0, num_clients={num_clients}) integers; got values from "
                       f"{ids_np.min()} to {ids_np.max()} ({ids_np.dtype}); an out-of-range id would be dropped.")
  t, p = jnp.asarray(true_counts), jnp.asarray(pred_counts)
  ids = jnp.asarray(client_ids)
  seg = lambda x: _segment_sum(x, ids, num_clients)
  nb = seg(jnp.ones(ids.shape, jnp.int32))
  mean = lambda x: seg(x) / jnp.where(nb > 0, nb, jnp.nan)
  valid = _valid(p)
  correct = jnp.where(valid[:, None], jnp.minimum(t, p), 0)
  total = jnp.where(valid[:, None], t, 0)
  class_correct, class_total = seg(correct), seg(total)
  ratio = class_correct / jnp.where(class_total > 0, class_total, jnp.nan)
  all_nan = jnp.all(jnp.isnan(ratio), axis=-1)
  class_acc = jnp.where(all_nan, jnp.nan, jnp.nanmean(jnp.where(all_nan[:, None], 0.0, ratio), axis=-1))
  return ClientMetrics(lnacc=mean(lnacc(t, p)), leacc=mean(leacc(t, p)),
                       symmetric_existence=mean(symmetric_existence_accuracy(t, p)), class_acc=class_acc,
                       class_correct=class_correct, class_total=class_total, num_batches=nb)


def mean_std_over_clients(values: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and population standard deviation (ddof 0, as the HAR evaluation) over clients, ignoring NaN."""
  v = jnp.asarray(values)
  return jnp.nanmean(v, axis=0), jnp.nanstd(v, axis=0)


def counts_from_labels(labels: jax.Array, num_classes: int, mask: jax.Array | None = None) -> jax.Array:
  """Label vector i32[..., N] -> counts i32[..., C] (masked entries excluded). Labels outside [0, C) would count
  nowhere: refused when the arrays are concrete (under jit they cannot be inspected)."""
  if not is_int(num_classes) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise ValueError(f"labels must be integers (class ids), got dtype {jnp.result_type(labels)}.")
  if mask is not None and np.shape(mask) != np.shape(labels):
    raise ValueError(f"mask must have the labels' shape {np.shape(labels)} (one flag per label), got "
                     f"{np.shape(mask)}.")
  outside = values_outside(labels, num_classes, mask)
  if outside:
    raise ValueError(f"labels must be in [0, num_classes={num_classes}); got values from {outside[0]} to "
                     f"{outside[1]} (mask out padding with mask=...).")
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32)
  if mask is not None:
    onehot = onehot * mask[..., None].astype(jnp.int32)
  return jnp.sum(onehot, axis=-2)


# --- Eavesdrop (Wang et al.) success rates ---------------------------------------------------------------------

def sniffing_correct(present_pred: jax.Array, owner_counts: jax.Array) -> jax.Array:
  """bool[..., C]: Class Sniffing's call equals the truth (label owned by >= 1 selected client). The paper's
  success rate T_s / (T_s + T_f) is the mean of this over rounds, per label."""
  if np.shape(present_pred) != np.shape(owner_counts):
    raise ValueError(f"present_pred {np.shape(present_pred)} and owner_counts {np.shape(owner_counts)} must have "
                     "the same shape [..., C] (one call and one count per label).")
  if not jnp.issubdtype(jnp.result_type(present_pred), jnp.bool_):
    raise TypeError(f"present_pred must be Class Sniffing's bool calls, got dtype {jnp.result_type(present_pred)} "
                    "(a score? threshold it first).")
  return jnp.asarray(present_pred) == (jnp.asarray(owner_counts) > 0)


def quantity_success(estimate: jax.Array, owner_counts: jax.Array, alpha) -> jax.Array:
  """bool[...]: |estimate - true number of owners| <= alpha (sec. IV-C1; alpha = 1, or 5 % of N_p * P)."""
  if is_concrete(alpha) and not (np.ndim(alpha) == 0 and np.isfinite(alpha) and alpha >= 0):
    raise ValueError(f"alpha must be a finite number >= 0 (the tolerance in clients), got {alpha!r}.")
  return jnp.abs(jnp.asarray(estimate) - jnp.asarray(owner_counts)) <= alpha


def client_count(estimate: jax.Array, num_selected) -> jax.Array:
  """i32[...]: Quantity Inference's X_* read as a number of clients, round(X_*) clipped to [0, K].

  Algorithm 2 returns the mean of the per-weight x_i, a real number; the paper's metric speaks of "an estimated
  number i^ of clients". Scored with `quantity_success`, the count succeeds when |X_* - i| < alpha + 1/2
  (ties aside), the real number when |X_* - i| <= alpha: both readings are reported (BUILD_NOTES.md).
  """
  if is_concrete(num_selected) and not (np.ndim(num_selected) == 0 and np.isfinite(num_selected)
                                        and num_selected >= 1):
    raise ValueError(f"num_selected must be a number >= 1 (K, the clients selected in the round), got "
                     f"{num_selected!r}.")
  return jnp.clip(jnp.round(jnp.asarray(estimate)), 0, num_selected).astype(jnp.int32)


def same_partition(pred, true) -> bool:
  """Whole Determination success (sec. IV-D2): the clusters equal the true groups exactly (same number of
  clusters, same labels in each), whatever the cluster ids."""
  pred, true = np.asarray(pred), np.asarray(true)
  if pred.ndim != 1 or true.ndim != 1:
    raise ValueError(f"partitions must be 1-D, one cluster id per label (as `cluster_labels` returns); got shapes "
                     f"{pred.shape} and {true.shape}.")
  if pred.shape != true.shape:
    raise ValueError(f"partitions of different sizes: {pred.shape} vs {true.shape}.")
  return bool(np.array_equal(pred[:, None] == pred[None, :], true[:, None] == true[None, :]))
