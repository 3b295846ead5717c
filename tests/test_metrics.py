"""Metrics on hand-computed cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxleak import metrics as M

TRUE = np.array([[5, 3, 2, 0], [10, 0, 0, 0], [0, 4, 4, 2]])
PRED = np.array([[8, 2, 0, 0], [6, 0, 0, 4], [0, 4, 4, 2]])


def test_lnacc_hand_computed():
  # row 0: min = 5 + 2 + 0 = 7 / 10; row 1: 6 / 10; row 2: exact.
  np.testing.assert_allclose(M.lnacc(TRUE, PRED), [0.7, 0.6, 1.0])


def test_leacc_is_existence_recall():
  # row 0: classes {0,1,2} true, {0,1} predicted -> 2/3; row 1: {0} found; extra class 3 is not penalised -> 1.
  np.testing.assert_allclose(M.leacc(TRUE, PRED), [2 / 3, 1.0, 1.0])


def test_symmetric_existence_penalises_both_directions():
  # row 0: class 2 missed -> 1 - 1/4; row 1: class 3 extra -> 1 - 1/4; row 2: exact.
  np.testing.assert_allclose(M.symmetric_existence_accuracy(TRUE, PRED), [0.75, 0.75, 1.0])


def test_client_metrics_and_class_acc_exclude_absent_classes():
  ids = np.array([0, 0, 1])
  cm = M.client_metrics(TRUE, PRED, ids, num_clients=3)
  np.testing.assert_allclose(cm.lnacc[:2], [0.65, 1.0])
  np.testing.assert_array_equal(cm.class_total[0], [15, 3, 2, 0])
  np.testing.assert_array_equal(cm.class_correct[0], [11, 2, 0, 0])
  # client 0: class 0 11/15, class 1 2/3, class 2 0/2, class 3 absent (NaN, excluded) -> mean of three.
  np.testing.assert_allclose(cm.class_acc[0], (11 / 15 + 2 / 3 + 0.0) / 3, rtol=1e-6)
  np.testing.assert_allclose(cm.class_acc[1], 1.0)
  assert np.isnan(cm.class_acc[2]) and np.isnan(cm.lnacc[2]) and cm.num_batches[2] == 0


def test_invalid_prediction_rows_score_nan():
  pred = PRED.copy(); pred[1] = -1
  out = M.lnacc(TRUE, pred)
  assert np.isnan(out[1]) and not np.isnan(out[0])
  cm = M.client_metrics(TRUE, pred, np.array([0, 0, 1]), 2)
  assert np.isnan(cm.lnacc[0])
  np.testing.assert_array_equal(cm.class_total[0], [5, 3, 2, 0])   # the invalid batch is left out of ClassAcc


def test_mean_std_over_clients_is_population_std_ignoring_nan():
  mean, std = M.mean_std_over_clients(jnp.array([0.5, 1.0, jnp.nan]))
  np.testing.assert_allclose([mean, std], [0.75, 0.25])


def test_counts_from_labels_with_mask():
  np.testing.assert_array_equal(M.counts_from_labels(jnp.array([0, 2, 2, 1]), 3, jnp.array([1, 1, 0, 1])),
                                [1, 1, 1])


def test_shape_mismatch_is_rejected():
  with pytest.raises(ValueError, match="same shape"):
    M.lnacc(TRUE, PRED[:, :3])


def test_a_prediction_of_another_total_is_refused_eagerly():
  """Found 2026-12-05 (twenty-second session): predicted [3, 2, 3] for true [1, 2, 3] scored LnAcc 1.0 (min() caps
  an overcount), a perfect score for counts no attack returns for N = 6."""
  with pytest.raises(ValueError, match=r"flat row 1: 12 predicted for 10 samples"):
    M.lnacc(TRUE, PRED + np.array([[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]))
  for metric in (M.leacc, M.symmetric_existence_accuracy, M.sorted_pairing_confusion):
    with pytest.raises(ValueError, match="sum to another total"):
      metric(np.array([1, 2, 3]), np.array([3, 2, 3]))
  with pytest.raises(ValueError, match="sum to another total"):
    M.client_metrics(TRUE, PRED * 2, np.array([0, 0, 1]), 2)            # the counts of 2N
  pred = PRED.copy(); pred[1] = -1                                      # an invalid row keeps its NaN, no error
  assert np.isnan(M.lnacc(TRUE, pred)[1])


def _confusion_by_listing(t, p):
  """The HAR code's way: write both label lists out sorted and count position pairs."""
  out = np.zeros((len(t), len(t)), np.int64)
  for a, b in zip(np.repeat(np.arange(len(t)), t), np.repeat(np.arange(len(p)), p)):
    out[a, b] += 1
  return out


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 7).flatmap(lambda c: st.tuples(
    st.lists(st.integers(0, 6), min_size=c, max_size=c), st.lists(st.integers(0, 9), min_size=c, max_size=c))))
def test_sorted_pairing_confusion_equals_pairing_the_written_out_lists(tp):
  t, raw = map(np.asarray, tp)
  n = int(t.sum())
  if n == 0:
    return
  p = np.floor(raw / max(raw.sum(), 1) * n).astype(int)
  p[np.argmax(raw)] += n - p.sum()                                 # a prediction summing to N
  got = np.asarray(M.sorted_pairing_confusion(jnp.asarray(t), jnp.asarray(p)))
  np.testing.assert_array_equal(got, _confusion_by_listing(t, p))
  np.testing.assert_array_equal(got.sum(1), t)
  np.testing.assert_array_equal(got.sum(0), p)


def test_sorted_pairing_confusion_is_zero_for_an_invalid_prediction():
  got = M.sorted_pairing_confusion(jnp.array([[2, 1], [1, 2]]), jnp.array([[-1, -1], [3, 0]]))
  assert got.tolist() == [[[0, 0], [0, 0]], [[1, 0], [2, 0]]]


def test_counts_from_labels_refuses_labels_it_would_drop():
  """Before: labels outside [0, C) were silently not counted ([0, 5, 7] with C = 3 gave [1, 0, 0])."""
  with pytest.raises(ValueError, match=r"labels must be in \[0, num_classes=3\); got values from 0 to 7"):
    M.counts_from_labels(jnp.array([0, 5, 7]), 3)
  with pytest.raises(ValueError, match="from -1 to 0"):
    M.counts_from_labels(jnp.array([0, -1]), 3)
  np.testing.assert_array_equal(M.counts_from_labels(jnp.array([0, 2, -1]), 3, mask=jnp.array([1, 1, 0])), [1, 0, 1])
  with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
    M.quantity_success(jnp.array([1.0]), jnp.array([1]), -1.0)


def test_a_true_row_of_no_samples_is_refused_eagerly_and_nan_under_jit():
  """Before: a batch of no samples scored LnAcc 0 and LeAcc 0, plausible numbers for an undefined metric."""
  t, p = jnp.array([[2, 1], [0, 0]]), jnp.array([[2, 1], [1, 0]])
  for metric in (M.lnacc, M.leacc, M.symmetric_existence_accuracy):
    with pytest.raises(ValueError, match=r"1 row\(s\) sum to 0 \(the first at flat row 1\)"):
      metric(t, p)
  with pytest.raises(ValueError, match="sum to 0"):
    M.client_metrics(t, p, jnp.array([0, 0]), 1)
  for metric in (M.lnacc, M.leacc):
    out = np.asarray(jax.jit(metric)(t, p))
    assert out[0] == 1.0 and np.isnan(out[1])


def test_eavesdrop_scores_refuse_inputs_that_broadcast_or_mean_nothing():
  # Each used to end in another library's words or give a number: a mask of another shape (jax's broadcast
  # error), calls and counts of different lengths (jax's "incompatible shapes"), scores given as calls (compared
  # to bools as numbers), K = 0 (every count clipped to 0), a 2-D or 0-D partition (NumPy's words).
  with pytest.raises(ValueError, match=r"mask must have the labels' shape \(2,\)"):
    M.counts_from_labels(jnp.array([0, 1]), 3, jnp.array([1, 1, 1]))
  with pytest.raises(ValueError, match="same shape"):
    M.sniffing_correct(jnp.array([True, False]), jnp.array([1, 0, 2]))
  with pytest.raises(TypeError, match="bool calls"):
    M.sniffing_correct(jnp.array([0.7, 0.1, 0.9]), jnp.array([1, 0, 2]))
  np.testing.assert_array_equal(M.sniffing_correct(jnp.array([True, True, False]), jnp.array([1, 0, 0])),
                                [True, False, True])
  for k in (0, -3, float("nan")):
    with pytest.raises(ValueError, match="num_selected must be a number >= 1"):
      M.client_count(jnp.array([1.4, 2.6]), k)
  np.testing.assert_array_equal(M.client_count(jnp.array([-0.4, 1.4, 2.6, 9.0]), 3), [0, 1, 3, 3])
  with pytest.raises(ValueError, match="partitions must be 1-D"):
    M.same_partition([[0, 1], [1, 0]], [[0, 1], [1, 0]])
  assert M.same_partition([0, 0, 1], [1, 1, 0]) and not M.same_partition([0, 0, 1], [0, 1, 1])
