"""Every registered attack, transform and metric refuses or flags nonsense instead of returning a plausible number.

Property tests over random shapes, scales and positions of non-finite values (hypothesis)."""
import math
import re

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import jaxleak.attacks as A
from jaxleak import LastLayerGrads, LastLayerParams
from jaxleak import metrics as M
from jaxleak import federated as F
from jaxleak import privacy as P

KEY = jax.random.key(0)


def _grads(seed, d, c, scale):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return LastLayerGrads(kernel=scale * jax.random.normal(k1, (d, c)), bias=scale * jax.random.normal(k2, (c,)))


def _context(d, c, *, head=None, star=None):
  star = star or A.LLGStarParams(impact=jnp.float32(-0.01), offsets=jnp.zeros(c))
  head = head or LastLayerParams(kernel=0.01 * jnp.ones((d, c)), bias=jnp.zeros(c))
  basis = A.RLUBasis(kernel=0.1 * jax.random.normal(KEY, (c, d, c)), bias=0.1 * jax.random.normal(KEY, (c, c)))
  return A.AttackContext(key=KEY, star_params=star, head=head, rlu_basis=basis)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.sampled_from([1, 16]), c=st.sampled_from([2, 12]),
       n=st.sampled_from([1, 200]), exponent=st.integers(-20, 20), name=st.sampled_from(A.names()))
def test_any_finite_gradient_gives_counts_summing_to_n(seed, d, c, n, exponent, name):
  g = _grads(seed, d, c, 2.0 ** exponent)
  out = np.asarray(A.run(name, g, n, _context(d, c)))
  assert out.shape == (c,) and out.min() >= 0 and out.sum() == n


@pytest.mark.parametrize("name", A.names())
def test_non_finite_gradient_raises_eagerly_and_is_invalid_under_jit(name):
  # Every attack, NaN/+inf/-inf in kernel and in bias at random positions (one compilation per attack: the six
  # broken updates go through one jitted vmap). C alternates between 3 and 10 over the attacks.
  d, c = 5, (3, 10)[A.names().index(name) % 2]
  rng = np.random.default_rng(A.names().index(name))
  ctx = _context(d, c)
  bad = []
  for where in ("kernel", "bias"):
    for value in (math.nan, math.inf, -math.inf):
      g = _grads(int(rng.integers(10_000)), d, c, 0.1)
      leaf = getattr(g, where)
      flat = leaf.reshape(-1).at[int(rng.integers(leaf.size))].set(value)
      bad.append(g._replace(**{where: flat.reshape(leaf.shape)}))
      # Every attack refuses any non-finite entry, also in the leaf it does not read: such an update is broken.
      with pytest.raises(ValueError, match="NaN or Inf"):
        A.run(name, bad[-1], 20, ctx)
  out = jax.jit(jax.vmap(lambda x: A.run(name, x, 20, ctx)))(jax.tree.map(lambda *xs: jnp.stack(xs), *bad))
  np.testing.assert_array_equal(out, np.full((len(bad), c), A.INVALID_COUNT))


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_head_or_star_params_invalidate_the_attacks_that_read_them(value):
  d, c = 6, 4
  g = _grads(1, d, c, 0.1)
  head = LastLayerParams(kernel=jnp.ones((d, c)).at[2, 1].set(value), bias=jnp.zeros(c))
  star = A.LLGStarParams(impact=jnp.float32(value), offsets=jnp.zeros(c))
  for name, ctx in (("ilrg", _context(d, c, head=head)), ("llg_star", _context(d, c, star=star)),
                    ("llg_star_har", _context(d, c, star=star))):
    with pytest.raises(ValueError, match="NaN or Inf"):
      A.run(name, g, 10, ctx)
    # Under jit (head and estimates traced, as in a vmapped run) the counts are the invalid sentinel.
    f = jax.jit(lambda x, hd, st, name=name: A.run(name, x, 10, A.AttackContext(key=KEY, head=hd, star_params=st)))
    np.testing.assert_array_equal(f(g, ctx.head, ctx.star_params), [A.INVALID_COUNT] * c)


def test_num_samples_beyond_exact_float32_counting_is_refused():
  g = _grads(0, 3, 4, 0.1)
  assert int(A.ebi(g, 2 ** 24).sum()) == 2 ** 24
  for n in (2 ** 24 + 1, 10 ** 9):
    with pytest.raises(ValueError, match="at most 16,777,216"):
      A.ebi(g, n)


def test_integer_gradients_are_refused_by_every_attack():
  """Found 2026-12-04 (fourteenth session): an int32 gradient (a cast gone wrong) was attacked, e.g. llg read the
  truncated zeros and answered [10, 0, 0, 0, 0]."""
  g = _grads(0, 3, 4, 0.1)
  for bad in (LastLayerGrads(kernel=(g.kernel * 100).astype(jnp.int32), bias=g.bias),
              LastLayerGrads(kernel=g.kernel, bias=(g.bias * 100).astype(jnp.int32))):
    for name in A.names():
      with pytest.raises(TypeError, match=r"has dtype int32; a gradient is real-valued"):
        A.run(name, bad, 10, _context(3, 4))
  for dt in (jnp.bfloat16, jnp.float16):                  # low-precision floats are gradients
    assert int(A.ebi(jax.tree.map(lambda x: x.astype(dt), g), 10).sum()) == 10


def test_run_refuses_a_context_that_is_not_an_attack_context():
  """Before: a dict was ignored by attacks that take no context (and an AttributeError for those that do)."""
  g = _grads(0, 3, 4, 0.1)
  for name in ("ebi", "ilrg_uniform"):
    with pytest.raises(TypeError, match="context must be an AttackContext .*got dict.*fields: key, star_params"):
      A.run(name, g, 10, {"key": KEY})


def test_top_k_compress_keeps_non_finite_entries_visible():
  x = jnp.array([1.0, jnp.nan, -3.0, 0.1, jnp.inf])
  out = P.privatize(x, P.top_k_compress(0.4))
  assert np.isnan(out[1]) and np.isinf(out[4]), out


# --- metrics -----------------------------------------------------------------------------------------------------

TRUE = np.array([[5, 3, 2, 0], [10, 0, 0, 0]])


@pytest.mark.parametrize("true,pred,message", [
    (np.array([[5, -3, 8, 0]]), np.array([[5, 3, 2, 0]]), "true counts must be non-negative"),
    (np.array([[5.0, np.nan, 2, 0]]), np.array([[5, 3, 2, 0]]), "true counts must be finite"),
    (np.array([[5.5, 3, 1.5, 0]]), np.array([[5, 3, 2, 0]]), "true counts must be integers"),
    (np.array([[5, 3, 2, 0]]), np.array([[5, -3, 8, 0]]), "predicted counts must be non-negative"),
    (np.array([[5, 3, 2, 0]]), np.array([[5, np.inf, 2, 0]]), "predicted counts must be finite"),
])
def test_metrics_refuse_impossible_counts(true, pred, message):
  for metric in (M.lnacc, M.leacc, M.symmetric_existence_accuracy):
    with pytest.raises(ValueError, match=message):
      metric(true, pred)


def test_invalid_sentinel_rows_score_nan_not_a_number():
  pred = np.array([[A.INVALID_COUNT] * 4, [10, 0, 0, 0]])
  assert np.isnan(M.lnacc(TRUE, pred)[0]) and float(M.lnacc(TRUE, pred)[1]) == 1.0
  assert np.isnan(M.leacc(TRUE, pred)[0])


def test_client_metrics_refuse_out_of_range_ids():
  for ids, n in ((np.array([0, 2]), 2), (np.array([-1, 0]), 2)):
    with pytest.raises(ValueError, match="client_ids must be in"):
      M.client_metrics(TRUE, TRUE, ids, num_clients=n)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), present=st.floats(0.05, 1.0))
def test_metrics_stay_in_range_for_any_valid_counts(seed, present):
  # One shape (8 rows, 8 classes; each class present with probability `present`), so the metrics compile once.
  rng = np.random.default_rng(seed)
  true = rng.integers(0, 20, (8, 8)) * (rng.random((8, 8)) < present)
  true[np.arange(8), rng.integers(0, 8, 8)] += 1                  # N >= 1
  pred = np.stack([rng.multinomial(n, rng.dirichlet(np.ones(8))) for n in true.sum(1)])
  for metric in (M.lnacc, M.leacc, M.symmetric_existence_accuracy):
    v = np.asarray(metric(true, pred))
    assert np.all((v >= 0) & (v <= 1)), (metric.__name__, v)


def test_a_run_whose_updates_are_not_finite_is_refused_naming_the_subjects():
  # A model with a NaN weight (what a diverged training leaves) gives NaN updates; attacks would return no counts
  # and every metric NaN. The run stops instead, before any attack.
  from jaxleak import models
  from jaxleak.runs.leakage import LeakageConfig, run_leakage
  cfg = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=100, clients=(1, 2), attacks=("ebi",))
  variables = models.init(models.build("tinyhar", 5), jax.random.key(0), 50, 3)        # synthetic_tiny: C = 5
  head = variables["params"]["head"]
  variables["params"]["head"] = {**head, "kernel": head["kernel"].at[0, 0].set(jnp.nan)}
  with pytest.raises(ValueError, match=r"6 of 6 updates are not finite \(NaN or inf\), of subjects \[1, 2\]; the "
                                       r"model overflowed"):
    run_leakage(cfg, variables=variables)


@pytest.mark.parametrize("field,value,message", [
    ("seed", -1, "seed must be an integer >= 0, got -1"), ("seed", 1.5, "seed must be an integer >= 0, got 1.5"),
    ("seed", 2 ** 32, "seed must be at most 4,294,967,295 below 2**32, got 4294967296: JAX keys take 32"),
    ("attacks", "ebi", "attacks must be a tuple of attack names"), ("minmax", "no", "minmax must be True or False"),
    ("head_bias", 1, "head_bias must be True or False"),
    ("num_samples", 100.0, "num_samples must be a positive integer"),
    ("ldp", {"noise_std": 1.0}, "ldp must be a jaxleak.privacy.LdpConfig"),
    ("local", (20, 5), "local must be None (single step) or a jaxleak.federated.LocalSteps"),
    ("data_dir", "/tmp", "data_dir is read only with dataset wear, wetlab, tal; 'hapt' does not use it"),
    ("synthetic_scale", 0.5, "synthetic_scale applies to synthetic datasets only; 'hapt' is used whole")])
def test_a_leakage_config_refuses_each_mistyped_field_by_name(field, value, message):
  # Before 2026-12-04 these ran (a string 'no' read as True, data_dir ignored) or failed deep inside with a
  # message that did not name the field (NumPy's SeedSequence, an AttributeError on the dict).
  from jaxleak.runs.leakage import LeakageConfig
  with pytest.raises(ValueError, match=re.escape(message)):
    LeakageConfig(**{field: value}).validate()
  LeakageConfig(seed=np.int64(3), attacks=["ebi", "llg"]).validate()              # NumPy ints and lists are fine


def test_run_leakage_refuses_a_dataset_of_another_name_and_objects_that_are_not_configs():
  """Before: cfg.dataset='synthetic_tiny' with a synthetic_wetlab dataset ran, the results labelled synthetic_tiny;
  a dict as cfg ended in an AttributeError."""
  from jaxleak import data as D
  from jaxleak.runs.leakage import LeakageConfig, run_leakage
  cfg = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=50, attacks=("ebi",))
  with pytest.raises(ValueError, match="the dataset given is 'synthetic_wetlab' but cfg.dataset is 'synthetic_tiny'"):
    run_leakage(cfg, dataset=D.make_synthetic("wetlab", scale=0.05))
  with pytest.raises(TypeError, match="cfg must be a jaxleak.runs.leakage.LeakageConfig, got dict"):
    run_leakage({"dataset": "hapt"})
  with pytest.raises(TypeError, match="dataset must be a jaxleak.data.HarDataset"):
    run_leakage(cfg, dataset="synthetic_tiny")


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 2.5, "epochs must be a positive integer"), ("seed", -2, "seed must be an integer >= 0"),
    ("class_weighted", "yes", "class_weighted must be True or False")])
def test_a_train_config_refuses_each_mistyped_field_by_name(field, value, message):
  from jaxleak.runs.fold_training import TrainConfig
  with pytest.raises(ValueError, match=re.escape(message)):
    TrainConfig(**{field: value})


@pytest.mark.parametrize("make,message", [
    (lambda: P.LdpConfig(noise_std="0.1"), "noise_std must be a number, got '0.1'"),
    (lambda: P.LdpConfig(clip_norm=True), "clip_norm must be a number, got True"),
    (lambda: F.LocalSteps(steps=2.5), "must be positive integers"),
    (lambda: F.LocalSteps(via_parameter_delta="no"),
     "via_parameter_delta must be True or False"),
    (lambda: F.LocalEpochs(1.5, 16, 0.1), "must be positive integers")])
def test_federated_settings_refuse_mistyped_values(make, message):
  # LocalSteps(steps=2.5) and LocalEpochs(epochs=1.5) were accepted, to fail when traced with a TypeError that
  # named neither; a string noise std raised "must be real number, not str".
  with pytest.raises(ValueError, match=re.escape(message)):
    make()
