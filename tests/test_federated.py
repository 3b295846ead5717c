"""Single-step client gradients: fast path equals autodiff, chunking and jit invariance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxleak import models
from jaxleak.federated import batch_grad_fn, last_layer_grads, minmax_scale
from jaxleak.head import head_grad
from jaxleak.types import LastLayerParams
from tests.helpers import mean_ce_head_grads


def _batches(k, n, ch, c, seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(kx, (k, n, 50, ch)) * 2 + 1, jax.random.randint(ky, (k, n), 0, c),
          jax.random.split(jax.random.key(seed + 1), k))


@pytest.mark.filterwarnings("ignore::jaxleak.federated.single_step.PerformanceWarning")   # small, chunked on purpose
@pytest.mark.parametrize("name", ["deepconvlstm", "tinyhar"])
def test_fast_path_equals_autodiff(name):
  model = models.build(name, 9)
  v = models.init(model, jax.random.key(0), 50, 3)
  x, y, keys = _batches(4, 20, 3, 9)
  fast = last_layer_grads(model, v, x, y, keys, method="fast", chunk_size=2)
  auto = last_layer_grads(model, v, x, y, keys, method="autodiff", chunk_size=2)
  np.testing.assert_allclose(fast.kernel, auto.kernel, atol=1e-6)
  np.testing.assert_allclose(fast.bias, auto.bias, atol=1e-6)
  assert fast.kernel.shape == (4, models.head_params(v["params"]).kernel.shape[0], 9)
  assert float(jnp.max(jnp.abs(fast.bias))) > 1e-3                       # not trivially zero


def test_bias_free_head_gives_no_bias_gradient():
  model = models.build("deepconvlstm", 5, head_bias=False)
  v = models.init(model, jax.random.key(0), 50, 2)
  x, y, keys = _batches(2, 10, 2, 5)
  for method in ("fast", "autodiff"):
    g = last_layer_grads(model, v, x, y, keys, method=method)
    assert g.bias is None and g.kernel.shape == (2, 128, 5)


def test_chunking_does_not_change_results_and_matches_a_loop():
  model = models.build("tinyhar", 5)
  v = models.init(model, jax.random.key(0), 50, 2)
  x, y, keys = _batches(5, 12, 2, 5)
  a = last_layer_grads(model, v, x, y, keys, chunk_size=1)
  b = last_layer_grads(model, v, x, y, keys, chunk_size=3)
  f = jax.jit(batch_grad_fn(model))
  loop = [f(v, x[i], y[i], keys[i]) for i in range(5)]
  np.testing.assert_allclose(a.kernel, b.kernel, atol=1e-6)
  np.testing.assert_allclose(a.bias, np.stack([g.bias for g in loop]), atol=1e-6)


def test_gradient_bias_sums_to_zero_over_classes():
  model = models.build("deepconvlstm", 7)
  v = models.init(model, jax.random.key(0), 50, 3)
  x, y, keys = _batches(3, 16, 3, 7)
  g = last_layer_grads(model, v, x, y, keys)
  np.testing.assert_allclose(jnp.sum(g.bias, axis=-1), 0.0, atol=1e-6)
  np.testing.assert_allclose(jnp.sum(g.kernel, axis=(-1, -2)), 0.0, atol=1e-5)


def test_head_grad_closed_form_equals_jax_grad_and_respects_mask():
  kf, kw, kl = jax.random.split(jax.random.key(3), 3)
  feats = jax.random.normal(kf, (10, 6))
  head = LastLayerParams(kernel=jax.random.normal(kw, (6, 4)), bias=jnp.arange(4.0) * 0.1)
  labels = jax.random.randint(kl, (10,), 0, 4)
  ours = head_grad(feats, labels, head)
  ref = mean_ce_head_grads(feats, labels, head.kernel, head.bias)
  np.testing.assert_allclose(ours.kernel, ref.kernel, atol=1e-6)
  mask = jnp.arange(10) < 6
  masked = head_grad(feats, labels, head, mask)
  ref6 = mean_ce_head_grads(feats[:6], labels[:6], head.kernel, head.bias)
  np.testing.assert_allclose(masked.bias, ref6.bias, atol=1e-6)


def test_head_grad_refuses_shapes_and_labels_that_do_not_fit_the_head():
  """Before: labels past C gave a gradient (one-hot zeros); a feature width or label count off by one ended in
  dot_general's or broadcasting's words."""
  hp = LastLayerParams(kernel=jnp.ones((8, 4)), bias=jnp.zeros(4))
  with pytest.raises(ValueError, match=r"head_grad: labels must be in \[0, 4\); got values from 9 to 9"):
    head_grad(jnp.ones((10, 8)), jnp.full(10, 9), hp)
  for features, labels in ((jnp.ones((10, 9)), jnp.zeros(10, int)), (jnp.ones((10, 8)), jnp.zeros(9, int))):
    with pytest.raises(ValueError, match=r"head_grad: expected features \[n, D = 8\], labels \[n\]"):
      head_grad(features, labels, hp)
  # Found 2026-12-04 (thirteenth session): a bias of another length ended in broadcasting's words, an empty batch
  # in a ZeroDivisionError, a list of labels in "'list' object has no attribute 'shape'".
  with pytest.raises(ValueError, match=r"and bias \[4\]; got \(10, 8\), \(10,\), bias \(5,\)"):
    head_grad(jnp.ones((10, 8)), jnp.zeros(10, int), LastLayerParams(kernel=jnp.ones((8, 4)), bias=jnp.zeros(5)))
  with pytest.raises(ValueError, match=r"head_grad: no samples \(features \[0, D\]\)"):
    head_grad(jnp.ones((0, 8)), jnp.zeros(0, int), hp)
  np.testing.assert_array_equal(head_grad(np.ones((2, 8)), [0, 3], hp).bias,
                                head_grad(jnp.ones((2, 8)), jnp.array([0, 3]), hp).bias)
  # Found 2026-12-04 (sixteenth session): a mask selecting no sample gave an all-zero gradient, which attacks read
  # as a batch; traced (a padded client under vmap) it still does, which is what padding needs.
  with pytest.raises(ValueError, match="the mask selects no sample"):
    head_grad(jnp.ones((3, 8)), jnp.zeros(3, int), hp, jnp.zeros(3, bool))
  padded = jax.vmap(lambda m: head_grad(jnp.ones((3, 8)), jnp.zeros(3, int), hp, m))(jnp.array([[1, 1, 0], [0, 0, 0]]))
  assert np.all(padded.kernel[1] == 0) and np.any(padded.kernel[0] != 0)


def test_minmax_scale_maps_batch_to_unit_range():
  x = jnp.array([[-2.0, 0.0], [6.0, 2.0]])
  np.testing.assert_allclose(minmax_scale(x), [[0.0, 0.25], [1.0, 0.5]])
  np.testing.assert_allclose(minmax_scale(jnp.ones((2, 2))), 0.0)          # constant batch: no NaN


def test_bad_shapes_are_rejected():
  model = models.build("tinyhar", 5)
  v = models.init(model, jax.random.key(0), 50, 2)
  x, y, keys = _batches(2, 4, 2, 5)
  with pytest.raises(ValueError, match="windows \\[K, N, T, ch\\]"):
    last_layer_grads(model, v, x[0], y, keys)


def test_labels_chunks_and_variables_that_cannot_mean_a_batch_are_refused_by_name():
  """Before: labels 7 or -1 for a 5-class model one-hot to zeros and gave gradients of no real batch, float labels
  and chunk_size=0 were accepted, and variables of another model or channel count ended in Flax's scope errors."""
  from jaxleak.federated import LocalSteps, client_updates, head_grads_and_model_norms
  model = models.build("tinyhar", 5)
  v = models.init(model, jax.random.key(0), 50, 2)
  x, y, keys = _batches(2, 4, 2, 5)
  for bad, match in ((y.at[0, 1].set(7), r"labels must be in \[0, 5\) .*from 0 to 7"),
                     (y.at[1, 0].set(-1), "labels must be .*from -1 to"),
                     (y.astype(jnp.float32), "labels must be integer class ids")):
    with pytest.raises(ValueError, match="last_layer_grads: " + match):
      last_layer_grads(model, v, x, bad, keys)
    with pytest.raises(ValueError, match="head_grads_and_model_norms: " + match):
      head_grads_and_model_norms(model, v, x, bad, keys)
    with pytest.raises(ValueError, match="client_updates: " + match):
      client_updates(model, v, x, bad, keys, local=LocalSteps(steps=2, batch_size=2, lr=0.1))
  with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
    last_layer_grads(model, v, x, y, keys, chunk_size=0)
  # Found 2026-12-05 (twenty-second session): N = 0 ended in NumPy's "zero-size array to reduction operation min".
  for call in (last_layer_grads, head_grads_and_model_norms):
    with pytest.raises(ValueError, match=r"batches of no windows \(N = 0, windows \(2, 0, 50, 2\)\)"):
      call(model, v, x[:, :0], y[:, :0], keys)
  for variables, shape in ((models.init(model, jax.random.key(0), 50, 3), r"\(50, 2\)"),
                           (models.init(models.build("deepconvlstm", 5), jax.random.key(0), 50, 2), r"\(50, 2\)")):
    with pytest.raises(ValueError, match=f"the variables do not fit TinyHAR on windows of shape {shape}.*models.init"):
      last_layer_grads(model, variables, x, y, keys)
  under_jit = jax.jit(lambda labels: last_layer_grads(model, v, x, labels, keys).bias)(y)   # traced: no value check
  np.testing.assert_allclose(under_jit, last_layer_grads(model, v, x, y, keys).bias, atol=1e-6)


def test_switches_options_and_batched_variables_are_checked_by_name():
  """Before: minmax="no" was truthy (scaling applied), an ldp dict ended in jit's "Non-hashable static arguments",
  batched_variables=True with one shared model in vmap's "rank should be at least 1", a local dict in
  client_updates in an AttributeError."""
  from jaxleak.federated import LocalSteps, client_updates, head_grads_and_model_norms
  model = models.build("tinyhar", 5)
  v = models.init(model, jax.random.key(0), 50, 2)
  x, y, keys = _batches(2, 4, 2, 5)
  local = LocalSteps(steps=2, batch_size=2, lr=0.1)
  calls = {"last_layer_grads": lambda **kw: last_layer_grads(model, v, x, y, keys, **kw),
           "head_grads_and_model_norms": lambda **kw: head_grads_and_model_norms(model, v, x, y, keys, **kw),
           "client_updates": lambda **kw: client_updates(model, v, x, y, keys, local=local, **kw)}
  for what, call in calls.items():
    with pytest.raises(TypeError, match=f"{what}: minmax must be True or False, got 'no'"):
      call(minmax="no")
    with pytest.raises(TypeError, match=f"{what}: batched_variables must be True or False"):
      call(batched_variables=1)
    with pytest.raises(ValueError, match=f"{what}: batched_variables=True needs one model per batch, a leading axis "
                                         "of 2 on every variable"):
      call(batched_variables=True)
  with pytest.raises(TypeError, match="ldp must be a jaxleak.privacy.LdpConfig"):
    last_layer_grads(model, v, x, y, keys, ldp={"clip_norm": 1.0})
  with pytest.raises(TypeError, match="local must be a jaxleak.federated.LocalSteps, got dict"):
    client_updates(model, v, x, y, keys, local={"steps": 2})
  stacked = jax.tree.map(lambda a: jnp.stack([a, a]), v)                  # the same model twice: same gradients
  np.testing.assert_allclose(last_layer_grads(model, stacked, x, y, keys, batched_variables=True).kernel,
                             last_layer_grads(model, v, x, y, keys).kernel, atol=1e-6)
  np.testing.assert_allclose(last_layer_grads(model, v, x, y, keys, minmax=np.bool_(False)).kernel,
                             last_layer_grads(model, v, x, y, keys, minmax=False).kernel)


def test_losses_and_selection_refuse_inputs_that_broadcast_or_cannot_mean_a_round():
  # Before: labels of another length ended in "Incompatible shapes for broadcasting"; N_p = 0 or 10.5 and an int
  # seed for rng in NumPy's words ("a must be a positive integer", "'int' object has no attribute 'choice'").
  from jaxleak.federated import class_weighted_ce, masked_mean_ce, mean_ce, select_participants
  logits, labels = jnp.zeros((4, 3)), jnp.array([0, 1, 2, 0])
  with pytest.raises(ValueError, match=r"mean_ce: logits must be \[n, C\] and labels \[n\]; got \(4, 3\) and \(5,\)"):
    mean_ce(logits, jnp.zeros(5, jnp.int32))
  with pytest.raises(ValueError, match=r"masked_mean_ce: mask must be \[n\]"):
    masked_mean_ce(logits, labels, jnp.ones(3))
  with pytest.raises(ValueError, match=r"class_weights must be \[C\] = \(3,\)"):
    class_weighted_ce(logits, labels, jnp.ones(4))
  np.testing.assert_allclose(mean_ce(logits, labels), np.log(3.0), rtol=1e-6)      # uniform logits: log C
  np.testing.assert_allclose(class_weighted_ce(logits, labels, jnp.array([1.0, 2.0, 3.0])), np.log(3.0), rtol=1e-6)
  # Found 2026-12-05 (seventeenth session): a label past C gave a NaN (masked) or a wrong loss, negative class
  # weights a loss of -4e12.
  with pytest.raises(ValueError, match=r"masked_mean_ce: labels must be class ids in \[0, C = 3\), got .* 0 to 5"):
    masked_mean_ce(logits, jnp.array([0, 1, 5, 0]), jnp.ones(4))
  np.testing.assert_allclose(masked_mean_ce(logits, jnp.array([0, 1, 5, 0]), jnp.array([1, 1, 0, 1])), np.log(3.0),
                             rtol=1e-6)                                  # a masked slot (padding) may hold anything
  with pytest.raises(ValueError, match=r"mean_ce: labels must be class ids"):
    mean_ce(logits, jnp.array([0, 1, -1, 0]))
  with pytest.raises(ValueError, match=r"class_weights must be finite numbers >= 0"):
    class_weighted_ce(logits, labels, -jnp.ones(3))
  rng = np.random.default_rng(0)
  for n in (0, 10.5, True):
    with pytest.raises(ValueError, match="num_participants must be a positive integer"):
      select_participants(n, 0.5, rng)
  with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
    select_participants(10, 0.5, 3)
  chosen = select_participants(10, 0.3, rng)
  assert len(chosen) == 3 and len(set(chosen.tolist())) == 3 and list(chosen) == sorted(chosen)


def test_update_function_factories_refuse_what_is_not_their_settings():
  """Found 2026-12-05 (seventeenth session): local_train_fn and client_update_fn took a tuple or dict for `local`
  and failed when traced ("'tuple' object has no attribute 'batch_size'"), client_execution of a string in
  "string indices must be integers"."""
  from jaxleak.federated import client_execution, client_update_fn, local_train_fn
  model = models.build("tinyhar", 5)
  with pytest.raises(TypeError, match="local_train_fn: local must be a jaxleak.federated.LocalEpochs"):
    local_train_fn(model, (1, 32, 0.1))
  with pytest.raises(TypeError, match="client_update_fn: local must be a jaxleak.federated.LocalSteps, got dict"):
    client_update_fn(model, {"steps": 2})
  with pytest.raises(TypeError, match="client_execution: variables must be the model's variables"):
    client_execution("x")


def test_a_full_backward_inside_a_lax_map_warns_on_cpu_and_nothing_else_does():
  import warnings
  from jaxleak.federated import PerformanceWarning
  model = models.build("tinyhar", 4)
  v = models.init(model, jax.random.key(0), 50, 2)
  x, y, keys = _batches(3, 7, 2, 4)            # shapes no other test uses: traced (and warned) here
  shapes = lambda method, chunk: jax.eval_shape(
      lambda v, x, y, k: last_layer_grads(model, v, x, y, k, method=method, chunk_size=chunk), v, x, y, keys)
  with pytest.warns(PerformanceWarning, match="chunk_size >= the number of batches"):
    shapes("autodiff", 1)
  with warnings.catch_warnings():
    warnings.simplefilter("error", PerformanceWarning)
    shapes("autodiff", 3)                      # one vmap
    shapes("fast", 1)                          # forward only: a lax.map costs nothing there


# --- a client whose loss weights classes (beyond the papers) -------------------------------------------------------

def _weighted_ce_head_grads(features, labels, kernel, bias, w):
  """jax.grad of sum_n w[y_n] CE_n / sum_n w[y_n], written out (PyTorch's CrossEntropyLoss(weight=w))."""
  def loss(params):
    k, b = params
    logp = jax.nn.log_softmax(features @ k + b)
    ce = -jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]
    return jnp.sum(w[labels] * ce) / jnp.sum(w[labels])
  gk, gb = jax.grad(loss)((kernel, bias))
  return gk, gb


def test_head_grad_with_class_weights_is_the_gradient_of_the_weighted_loss():
  kf, kw, kl = jax.random.split(jax.random.key(4), 3)
  feats = jax.random.normal(kf, (12, 6))
  head = LastLayerParams(kernel=jax.random.normal(kw, (6, 4)), bias=jnp.arange(4.0) * 0.1)
  labels = jax.random.randint(kl, (12,), 0, 4)
  w = jnp.array([0.5, 3.0, 0.0, 1.5])
  ours = head_grad(feats, labels, head, class_weights=w)
  gk, gb = _weighted_ce_head_grads(feats, labels, head.kernel, head.bias, w)
  np.testing.assert_allclose(ours.kernel, gk, atol=1e-6)
  np.testing.assert_allclose(ours.bias, gb, atol=1e-6)
  assert not np.allclose(ours.bias, head_grad(feats, labels, head).bias, atol=1e-3)    # the weights matter
  for scale in (1.0, 7.0):                   # equal weights, whatever their scale, are the plain mean
    np.testing.assert_allclose(head_grad(feats, labels, head, class_weights=jnp.full(4, scale)).bias,
                               head_grad(feats, labels, head).bias, atol=1e-6)
  mask = jnp.arange(12) < 7                  # a mask and weights: the weighted mean over the selected samples
  gk7, gb7 = _weighted_ce_head_grads(feats[:7], labels[:7], head.kernel, head.bias, w)
  np.testing.assert_allclose(head_grad(feats, labels, head, mask, class_weights=w).bias, gb7, atol=1e-6)
  with pytest.raises(ValueError, match=r"head_grad: class_weights must be \[C\] = \(4,\)"):
    head_grad(feats, labels, head, class_weights=jnp.ones(3))
  with pytest.raises(ValueError, match=r"class_weights must be finite numbers >= 0, got \[1.0, -1.0, 1.0, 1.0\]"):
    head_grad(feats, labels, head, class_weights=jnp.array([1.0, -1.0, 1.0, 1.0]))
  with pytest.raises(ValueError, match="every \\(selected\\) sample has class weight 0"):
    head_grad(feats, jnp.full(12, 2), head, class_weights=w)


@pytest.mark.filterwarnings("ignore::jaxleak.federated.single_step.PerformanceWarning")   # small, chunked on purpose
@pytest.mark.parametrize("name", ["deepconvlstm", "tinyhar"])
def test_class_weighted_client_updates_fast_equals_autodiff_and_each_batch_its_own_weights(name):
  from jaxleak.federated import head_grads_and_model_norms
  model = models.build(name, 5)
  v = models.init(model, jax.random.key(0), 50, 3)
  x, y, keys = _batches(4, 20, 3, 5)
  w = jnp.array([[1.0, 1, 1, 1, 1], [0.2, 4.0, 1, 1, 2.0], [1.0, 0, 3, 0.5, 1], [2.0, 2, 2, 2, 2]])
  fast = last_layer_grads(model, v, x, y, keys, class_weights=w, chunk_size=2)
  auto = last_layer_grads(model, v, x, y, keys, class_weights=w, method="autodiff", chunk_size=4)
  shared, _ = head_grads_and_model_norms(model, v, x, y, keys, class_weights=w)
  plain = last_layer_grads(model, v, x, y, keys)
  for other in (auto, shared):
    np.testing.assert_allclose(fast.kernel, other.kernel, atol=1e-6)
    np.testing.assert_allclose(fast.bias, other.bias, atol=1e-6)
  for i in (0, 3):                                          # equal weights in a row: that batch's plain mean
    np.testing.assert_allclose(fast.bias[i], plain.bias[i], atol=1e-6)
  assert not np.allclose(fast.bias[1], plain.bias[1], atol=1e-4)
  one = jax.jit(batch_grad_fn(model))(v, x[1], y[1], keys[1], w[1])      # a batch alone gets its row's weights
  np.testing.assert_allclose(one.bias, fast.bias[1], atol=1e-6)


def test_class_weighted_updates_under_ldp_and_what_is_refused():
  from jaxleak.federated import apply_batch_ldp, head_grads_and_model_norms
  from jaxleak.privacy import LdpConfig
  model = models.build("tinyhar", 5)
  v = models.init(model, jax.random.key(0), 50, 3)
  x, y, keys = _batches(3, 16, 3, 5)
  w = jnp.array([[0.2, 4.0, 1, 1, 2.0]] * 3)
  g, norms = head_grads_and_model_norms(model, v, x, y, keys, class_weights=w)
  for scope in ("all", "last_layer"):                       # the client clips and noises its weighted update
    ldp = LdpConfig(clip_norm=0.05, noise_std=0.01, clip_scope=scope)
    ours = last_layer_grads(model, v, x, y, keys, ldp=ldp, class_weights=w, chunk_size=3)
    noise_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    ref = jax.vmap(apply_batch_ldp, in_axes=(0, 0, None, 0))(g, norms, ldp, noise_keys)
    np.testing.assert_allclose(ours.bias, ref.bias, atol=1e-6)
  with pytest.raises(ValueError, match="class weights with per-example clipping"):
    last_layer_grads(model, v, x, y, keys, ldp=LdpConfig(clip_norm=1.0, clip_granularity="per_example"),
                     class_weights=w)
  with pytest.raises(ValueError, match=r"class_weights must be \[K, C\] = \(3, 5\), one row of class weights per "
                                       r"batch; got \(5,\)"):
    last_layer_grads(model, v, x, y, keys, class_weights=w[0])
  with pytest.raises(ValueError, match=r"batch 2's: class_weights must be finite numbers >= 0, got \[1.0, nan"):
    last_layer_grads(model, v, x, y, keys, class_weights=w.at[2, 1].set(jnp.nan).at[2, 0].set(1.0))
