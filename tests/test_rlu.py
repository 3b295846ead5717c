"""RLU: exact where its linear model is exact, near-perfect on untrained models (the paper's claim), its basis
from the model agrees with the closed form, and its inputs are checked."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxleak import LastLayerGrads, LastLayerParams, models
from jaxleak import attacks as A
from jaxleak.attacks.rlu import counts_from_solution
from jaxleak.federated import LocalSteps, client_updates, simulate_rlu_basis
from jaxleak.federated.rlu import scale_like_batches
from jaxleak.federated.single_step import minmax_scale
from tests.helpers import labels_from_counts, mean_ce_head_grads, random_head

KEY = jax.random.key(0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.sampled_from([2, 7]), n=st.sampled_from([1, 150]), bias=st.booleans())
def test_exact_linear_model_recovers_the_counts(seed, c, n, bias):
  # When the gradient IS sum_j n_j M[j] / N, the constrained least squares returns n exactly.
  rng = np.random.default_rng(seed)
  d = 6
  basis = A.RLUBasis(kernel=jnp.asarray(rng.normal(size=(c, d, c)), jnp.float32),
                     bias=jnp.asarray(rng.normal(size=(c, c)), jnp.float32) if bias else None)
  counts = np.bincount(rng.integers(0, c, n), minlength=c)
  g = LastLayerGrads(kernel=jnp.einsum("j,jdi->di", counts / n, basis.kernel),
                     bias=jnp.einsum("j,ji->i", counts / n, basis.bias) if bias else None)
  np.testing.assert_array_equal(A.rlu(g, n, rlu_basis=basis), counts)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_counts_are_nonnegative_and_sum_to_n_for_any_gradient(seed):
  k = jax.random.split(jax.random.key(seed), 3)
  g = LastLayerGrads(kernel=jax.random.normal(k[0], (5, 7)), bias=jax.random.normal(k[1], (7,)))
  basis = A.RLUBasis(kernel=jax.random.normal(k[2], (7, 5, 7)), bias=jax.random.normal(k[2], (7, 7)))
  pred = np.asarray(_rlu_jit(g, basis))
  assert pred.min() >= 0 and pred.sum() == 37


_rlu_jit = jax.jit(lambda g, b: A.rlu(g, 37, rlu_basis=b))


def test_basis_from_features_is_the_closed_form_per_label_gradient():
  # Row j of the basis = the mean-CE head gradient of the label-j examples alone (jax.grad, independent).
  c, n, d = 4, 5, 3
  feats = jax.random.normal(KEY, (c, n, d))
  head = random_head(jax.random.key(1), d, c, 0.5, 0.5)
  basis = A.rlu_basis_from_features(feats, head)
  for j in range(c):
    ref = mean_ce_head_grads(feats[j], jnp.full((n,), j), head.kernel, head.bias)
    np.testing.assert_allclose(basis.kernel[j], ref.kernel, atol=1e-6)
    np.testing.assert_allclose(basis.bias[j], ref.bias, atol=1e-6)
  # the spread: per (d, i) the std of one example's gradient around its label's mean, pooled over labels
  one = lambda f, y: mean_ce_head_grads(f[None], y[None], head.kernel, head.bias).kernel
  per_example = jax.vmap(jax.vmap(one))(feats, jnp.broadcast_to(jnp.arange(c)[:, None], (c, n)))
  np.testing.assert_allclose(basis.kernel_std, jnp.sqrt(jnp.mean(jnp.var(per_example, axis=1), axis=0)),
                             rtol=1e-3, atol=1e-6)


def test_counts_from_solution_clips_rescales_and_rounds_by_largest_remainder():
  np.testing.assert_array_equal(counts_from_solution(jnp.array([2.6, -1.0, 1.2, 1.2]), 5), [3, 0, 1, 1])
  np.testing.assert_array_equal(counts_from_solution(jnp.array([1.0, 1.0, 1.0]), 10), [4, 3, 3])   # ties: low index
  np.testing.assert_array_equal(counts_from_solution(jnp.array([-1.0, jnp.nan]), 3), [2, 1])       # nothing: flat


def _model_and_data(model_name, c, n_aux, seed=0):
  model = models.build(model_name, c)
  variables = models.init(model, jax.random.key(seed), 24, 3)
  rng = np.random.default_rng(seed)
  # class-dependent inputs, so the labels matter to the features
  means = rng.normal(size=(c, 1, 3))
  make = lambda labels: (means[labels] + rng.normal(size=labels.shape + (24, 3))).astype(np.float32)
  aux_x = make(np.repeat(np.arange(c)[:, None], n_aux, 1).reshape(-1)).reshape(c, n_aux, 24, 3)
  return model, variables, jnp.asarray(aux_x), make


def test_near_perfect_on_untrained_multi_step_updates_and_sum_equivalent_scales_by_s():
  c, n = 6, 60
  model, variables, aux_x, make = _model_and_data("mlp", c, 16)
  rng = np.random.default_rng(2)
  counts = [rng.multinomial(n, rng.dirichlet(np.ones(c))) for _ in range(4)]
  y = np.stack([labels_from_counts(cn, s) for s, cn in enumerate(counts)])
  x = jnp.asarray(np.stack([make(row) for row in y]))
  local = LocalSteps(steps=3, batch_size=20, lr=1e-3)
  g = client_updates(model, variables, x, jnp.asarray(y), jax.random.split(KEY, 4), local=local)
  basis = simulate_rlu_basis(model, variables, aux_x, KEY, local=local, num_simulations=1)
  pred = np.asarray(jax.vmap(lambda gg: A.rlu(gg, n, rlu_basis=basis))(g))
  assert (np.abs(pred - np.stack(counts)).sum(1) / (2 * n)).mean() <= 0.05, (pred, counts)
  # the 'sum' equivalent (sum_s g_s) is S times the mean: so is its basis
  sum_basis = simulate_rlu_basis(model, variables, aux_x, KEY, local=dataclasses.replace(local, equivalent="sum"),
                                 num_simulations=1)
  np.testing.assert_allclose(sum_basis.kernel, 3 * basis.kernel, rtol=1e-5, atol=1e-9)


def test_scaling_like_batches_scales_each_group_to_unit_range():
  x = jax.random.normal(KEY, (10, 4, 2)) * 5
  np.testing.assert_allclose(scale_like_batches(x, KEY, 10), minmax_scale(x), atol=1e-6)   # one group = whole
  out = scale_like_batches(x, KEY, 3)
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6
  assert not np.allclose(out, minmax_scale(x))


def test_inputs_are_checked_with_the_fix_named():
  g = LastLayerGrads(kernel=jnp.ones((4, 3)), bias=jnp.ones(3))
  with pytest.raises(ValueError, match="simulate_rlu_basis"):
    A.run("rlu", g, 10)
  with pytest.raises(TypeError, match="RLUBasis"):
    A.rlu(g, 10, rlu_basis=(jnp.zeros((3, 4, 3)), None))
  with pytest.raises(ValueError, match=r"must be \[3, 4, 3\]"):
    A.rlu(g, 10, rlu_basis=A.RLUBasis(kernel=jnp.zeros((3, 5, 3)), bias=None))
  with pytest.raises(ValueError, match="NaN"):
    A.rlu(g, 10, rlu_basis=A.RLUBasis(kernel=jnp.full((3, 4, 3), jnp.nan), bias=None))
  head = LastLayerParams(kernel=jnp.zeros((4, 3)), bias=None)
  with pytest.raises(ValueError, match="every class"):
    A.rlu_basis_from_features(jnp.zeros((2, 5, 4)), head)
  with pytest.raises(ValueError, match=r"features must be \[C, n, D\] with D = 4, .*got \(3, 5, 9\)"):   # was:
    A.rlu_basis_from_features(jnp.zeros((3, 5, 9)), head)                     # dot_general's contracting words


def test_auxiliary_windows_leave_out_the_held_out_subject_and_flag_missing_classes():
  from jaxleak import data as D
  from jaxleak.runs.leakage.scoring import rlu_auxiliary
  clients = D.make_clients(D.make_synthetic("tiny"))
  owner = np.repeat(np.asarray(clients.subject_ids), np.diff(clients.offsets))
  s = clients.subject_ids[1]
  idx, has = rlu_auxiliary(clients, 8, KEY, exclude_subject=s)
  assert idx.shape == (clients.num_classes, 8)
  assert not np.any(owner[idx[has]] == s)
  np.testing.assert_array_equal(clients.labels[idx[has]], np.repeat(np.flatnonzero(has)[:, None], 8, 1))
  np.testing.assert_array_equal(has, [np.any(clients.labels[owner != s] == c) for c in range(clients.num_classes)])
  assert not has.all()                  # synthetic 'tiny' never has class 4


def test_a_label_without_basis_gets_zero_and_the_rest_still_sums_to_n():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(4, 5, 4)).astype(np.float32)
  kernel[3] = 0.0                                              # no auxiliary example of label 3
  basis = A.RLUBasis(kernel=jnp.asarray(kernel), bias=None)
  counts = np.array([5, 2, 3, 0])
  g = LastLayerGrads(kernel=jnp.einsum("j,jdi->di", counts / 10, kernel), bias=None)
  np.testing.assert_array_equal(A.rlu(g, 10, rlu_basis=basis), counts)


def test_rlu_in_the_leakage_pipeline_is_near_perfect_on_an_untrained_model():
  # The paper's claim for untrained models (iLRG, exact there, runs beside it).
  from jaxleak.runs.leakage import LeakageConfig, run_leakage
  res = run_leakage(LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=50, num_clients=2,
                                  attacks=("ilrg_uniform", "rlu"), rlu_aux_per_class=16, rlu_simulations=2))
  err = np.abs(res.pred_counts["rlu"] - res.true_counts).sum(1) / 100
  assert err.mean() <= 0.03
  with pytest.raises(ValueError, match="rlu_aux_per_class"):
    LeakageConfig(attacks=("rlu",), rlu_aux_per_class=0).validate()


def test_per_fold_bases_equal_each_fold_alone_and_missing_classes_are_zero():
  # Trained runs estimate one basis per fold inside one program (lax.map); it must equal each fold on its own.
  from jaxleak.runs.leakage.scoring import _masked_basis, _masked_basis_per_fold
  model = models.build("mlp", 3)
  x = jax.random.normal(KEY, (2, 3, 4, 24, 3))                       # [F, C, n, T, channels]
  folds = [models.init(model, jax.random.key(f), 24, 3) for f in range(2)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *folds)
  has = jnp.asarray([[True, True, True], [True, False, True]])
  static = dict(model=model, local=LocalSteps(steps=2, batch_size=4, lr=0.1), num_simulations=2, minmax_batch=4)
  together = _masked_basis_per_fold(stacked, x, has, KEY, **static)
  for f in range(2):
    alone = _masked_basis(folds[f], x[f], has[f], KEY, **static)
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(jax.tree.map(lambda t: t[f], together))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not np.any(np.asarray(together.kernel[1, 1])) and np.any(np.asarray(together.kernel[0, 1]))
  assert not np.any(np.asarray(together.bias[1, 1]))
