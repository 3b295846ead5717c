"""Updates from PyTorch (and NumPy / Flower-style weights) as LastLayerGrads: checked against the closed-form head
gradient and against the gradients torch itself computed during local training."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

import jaxleak.attacks as A
from jaxleak import LastLayerParams, interop, models
from jaxleak.head import head_grad

torch = pytest.importorskip("torch")


def _labels(rng, counts):
  return rng.permutation(np.repeat(np.arange(len(counts)), counts))


def test_torch_head_gradient_equals_the_closed_form():
  rng = np.random.default_rng(0)
  n, d, c = 30, 7, 4
  features = rng.normal(size=(n, d)).astype(np.float32)
  labels = rng.integers(0, c, n)
  head = torch.nn.Linear(d, c)
  loss = torch.nn.functional.cross_entropy(head(torch.from_numpy(features)), torch.from_numpy(labels))
  loss.backward()
  got = interop.head_gradient(head.weight.grad, head.bias.grad)            # torch tensors, [C, D] layout
  params = LastLayerParams(kernel=jnp.asarray(head.weight.detach().numpy().T),
                           bias=jnp.asarray(head.bias.detach().numpy()))
  want = head_grad(jnp.asarray(features), jnp.asarray(labels), params)
  np.testing.assert_allclose(got.kernel, want.kernel, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got.bias, want.bias, rtol=1e-5, atol=1e-7)
  same = interop.head_gradient(np.asarray(want.kernel), np.asarray(want.bias), layout="flax")
  np.testing.assert_array_equal(same.kernel, want.kernel)


def test_one_sgd_step_of_an_untrained_torch_head_gives_the_exact_counts():
  # A zero head predicts uniformly, so the bias gradient is 1/C - n_c/N: uniform iLRG reads the counts off exactly.
  rng = np.random.default_rng(1)
  counts = np.array([12, 0, 5, 23])
  n, d, c, lr = int(counts.sum()), 16, 4, 0.05
  head = torch.nn.Linear(d, c)
  torch.nn.init.zeros_(head.weight)
  torch.nn.init.zeros_(head.bias)
  before = (head.weight.detach().clone(), head.bias.detach().clone())
  x = torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32))
  y = torch.from_numpy(_labels(rng, counts))
  opt = torch.optim.SGD(head.parameters(), lr=lr)
  torch.nn.functional.cross_entropy(head(x), y).backward()
  opt.step()
  update = interop.head_update(before, (head.weight, head.bias), lr=lr)
  np.testing.assert_allclose(update.bias, 1 / c - counts / n, atol=1e-6)
  np.testing.assert_array_equal(A.ilrg_uniform(update, n, key=jax.random.key(0)), counts)


@pytest.mark.parametrize("equivalent", ["mean", "sum"])
def test_multi_step_update_of_a_torch_model_is_the_sum_or_mean_of_its_gradients(equivalent):
  rng = np.random.default_rng(2)
  n, b, steps, lr = 60, 20, 3, 0.1
  torch.manual_seed(0)
  model = torch.nn.Sequential(torch.nn.Linear(9, 12), torch.nn.ReLU(), torch.nn.Linear(12, 5))
  head = model[2]
  before = (head.weight.detach().clone(), head.bias.detach().clone())
  x = torch.from_numpy(rng.normal(size=(n, 9)).astype(np.float32))
  y = torch.from_numpy(rng.integers(0, 5, n))
  opt = torch.optim.SGD(model.parameters(), lr=lr)
  grads_w, grads_b = [], []
  for s in range(steps):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x[s * b:(s + 1) * b]), y[s * b:(s + 1) * b]).backward()
    grads_w.append(head.weight.grad.numpy().copy())
    grads_b.append(head.bias.grad.numpy().copy())
    opt.step()
  got = interop.head_update(before, (head.weight, head.bias), lr=lr, local_steps=steps, equivalent=equivalent)
  scale = 1.0 / steps if equivalent == "mean" else 1.0
  # float32 weights: their difference carries round-off of the weights' size, not of the steps'.
  np.testing.assert_allclose(got.kernel, (np.sum(grads_w, 0) * scale).T, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got.bias, np.sum(grads_b, 0) * scale, rtol=1e-4, atol=1e-6)


def test_half_precision_torch_tensors():
  w = torch.tensor([[0.5, -0.25], [1.0, 2.0], [0.125, 0.0]])            # [C = 3, D = 2]
  for dtype in (torch.bfloat16, torch.float16, torch.float64):
    g = interop.head_gradient(w.to(dtype), torch.zeros(3, dtype=dtype))
    np.testing.assert_array_equal(g.kernel, w.numpy().T)                 # these values are exact in every dtype


def test_batch_axes_convert_each_client_and_vmap_through_the_attacks():
  rng = np.random.default_rng(3)
  k, c, d, lr = 5, 4, 6, 0.1
  w0, b0 = rng.normal(size=(c, d)), rng.normal(size=c)               # one global head (torch layout)
  w1, b1 = w0 - lr * rng.normal(size=(k, c, d)), b0 - lr * rng.normal(size=(k, c))   # K clients' heads
  stacked = interop.head_update((w0, b0), (w1, b1), lr=lr)
  assert stacked.kernel.shape == (k, d, c) and stacked.bias.shape == (k, c)
  for i in range(k):
    one = interop.head_update((w0, b0), (w1[i], b1[i]), lr=lr)
    np.testing.assert_array_equal(stacked.kernel[i], one.kernel)
    np.testing.assert_array_equal(stacked.bias[i], one.bias)
  counts = jax.vmap(lambda g: A.llbg(g, 20))(stacked)
  np.testing.assert_array_equal(counts[2], A.llbg(interop.head_update((w0, b0), (w1[2], b1[2]), lr=lr), 20))
  g = interop.head_gradient(np.stack([w0, 2 * w0]), np.stack([b0, 2 * b0]))
  np.testing.assert_allclose(g.kernel[1], 2 * w0.T, rtol=1e-6)
  with pytest.raises(ValueError, match="batch axes that do not match"):
    interop.head_update((np.stack([w0] * 3), np.stack([b0] * 3)), (w1, b1), lr=lr)
  with pytest.raises(ValueError, match=r"so bias \(5, 4\)"):
    interop.head_gradient(w1, b0)


def _fedavg_clients(rng, c, d, lr, sizes, steps):
  """K clients start from one zero head (uniform softmax) and each runs S_k SGD steps over disjoint mini-batches of
  its N_k samples (N_k / S_k each) of a linear head on fixed features. Returns before, after [K], the true counts."""
  w0, b0 = np.zeros((c, d)), np.zeros(c)
  after_w, after_b, counts = [], [], []
  for n, s in zip(sizes, steps):
    y = rng.integers(0, c, n)
    h = rng.normal(size=(n, d)) * 0.3
    w, b = w0.copy(), b0.copy()
    for part in np.split(np.arange(n), s):
      z = h[part] @ w.T + b
      p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
      delta = (p - np.eye(c)[y[part]]) / len(part)
      w, b = w - lr * delta.T @ h[part], b - lr * delta.sum(0)
    after_w.append(w); after_b.append(b); counts.append(np.bincount(y, minlength=c))
  return (w0, b0), (np.stack(after_w), np.stack(after_b)), np.stack(counts)


def test_clients_of_different_sizes_and_steps_in_one_vmapped_attack():
  """Flower-style: K clients of different N_k ran different S_k; head_update takes one S (and lr) per client,
  equal to K single calls, and one vmapped iLRG call with one N per client recovers every client's counts (a near
  uniform head: the mean update is 1/C - n_c/N up to the small drift of the S steps)."""
  rng = np.random.default_rng(7)
  c, d, lr = 5, 6, 1e-3
  sizes, steps = np.array([10, 24, 60, 7, 33]), np.array([2, 3, 5, 1, 3])
  before, after, counts = _fedavg_clients(rng, c, d, lr, sizes, steps)
  stacked = interop.head_update(before, after, lr=lr, local_steps=steps)
  for i in range(len(sizes)):
    one = interop.head_update(before, (after[0][i], after[1][i]), lr=lr, local_steps=int(steps[i]))
    np.testing.assert_array_equal(stacked.kernel[i], one.kernel)
    np.testing.assert_array_equal(stacked.bias[i], one.bias)
  per_lr = interop.head_update(before, after, lr=np.full(len(sizes), lr), local_steps=steps)
  np.testing.assert_array_equal(per_lr.bias, stacked.bias)
  keys = jax.random.split(jax.random.key(0), len(sizes))
  attack = jax.jit(jax.vmap(lambda g, n, key: A.ilrg_uniform(g, n, key=key, max_samples=64)))
  np.testing.assert_array_equal(attack(stacked, jnp.asarray(sizes), keys), counts)
  # one S for all (the mistake this replaces) gets the clients that ran other S wrong
  wrong = interop.head_update(before, after, lr=lr, local_steps=3)
  assert not np.array_equal(np.asarray(attack(wrong, jnp.asarray(sizes), keys)), counts)


@pytest.mark.parametrize("kwargs, match", [
    ({"local_steps": np.array([1, 2])}, r"local_steps has shape \(2,\): give one value, or one per client"),
    ({"local_steps": np.array([1, 2, 0])}, "local_steps: every client's value must be a positive integer; entry 2 "
                                           "is 0.$"),
    ({"local_steps": np.array([1.0, 2.0, 3.0])}, "local_steps must be integers"),
    ({"local_steps": np.array([True, True, True])}, "local_steps must be a positive integer"),
    ({"lr": np.array([0.1, np.nan, 0.1])}, "lr: every client's value must be a finite number > 0; entry 1 is nan"),
    ({"lr": np.array([0.1, 0.1])}, r"lr has shape \(2,\)"),
    ({"lr": np.float32(-1)}, r"lr must be a finite number > 0 \(the clients' SGD learning rate\), got -1.0.$"),
])
def test_per_client_lr_and_steps_are_checked(kwargs, match):
  w0, w1 = np.zeros((4, 6)), np.ones((3, 4, 6))
  kwargs = {"lr": 0.1, **kwargs}
  with pytest.raises(ValueError, match=match):
    interop.head_update((w0, None), (w1, None), **kwargs)


def test_bias_free_heads_and_numpy_inputs():
  g = interop.head_gradient(np.ones((3, 8)), None)
  assert g.bias is None and g.kernel.shape == (8, 3) and g.kernel.dtype == jnp.float32
  u = interop.head_update((np.ones((8, 3)), None), (np.zeros((8, 3)), None), lr=0.5, layout="keras")
  np.testing.assert_array_equal(u.kernel, np.full((8, 3), 2.0, np.float32))


@pytest.mark.parametrize("call, match", [
    (lambda: interop.head_gradient(np.ones((3, 8)), np.ones(8)), "looks like the flax layout"),
    (lambda: interop.head_gradient(np.ones((8, 3)), np.ones(8), layout="flax"), "looks like the torch layout"),
    (lambda: interop.head_gradient(np.ones((3, 8)), np.ones(5)), r"shape \(5,\) does not match"),
    (lambda: interop.head_gradient(np.ones(8)), r"must be \[C, D\] for torch"),
    (lambda: interop.head_gradient(np.ones((1, 8))), r"1 classes by 8 features .*at least 2 classes"),
    (lambda: interop.head_gradient(np.zeros((0, 8)), np.zeros(0)), r"0 classes by 8 features"),   # was accepted
    (lambda: interop.head_gradient(np.ones((8, 0)), layout="flax"), r"0 classes by 8 features"),
    (lambda: interop.head_gradient(np.array([[1.0, np.nan]])), "NaN or Inf"),
    (lambda: interop.head_gradient(np.array([["a", "b"]])), "real numbers"),
    (lambda: interop.head_gradient(np.ones((3, 8)), layout="jax"), "layout: unknown 'jax'"),
    (lambda: interop.head_update((np.ones((3, 8)), None), (np.ones((3, 8)), None), lr=0.0), "lr must be"),
    (lambda: interop.head_update((np.ones((3, 8)), None), (np.ones((3, 8)), None), lr=0.1, local_steps=0),
     "local_steps must be"),
    (lambda: interop.head_update((np.ones((3, 8)), None), (np.ones((3, 8)), None), lr=0.1, equivalent="avg"),
     "equivalent: unknown"),
    (lambda: interop.head_update((np.ones((3, 8)), None), (np.ones((4, 8)), None), lr=0.1), "different heads"),
    (lambda: interop.head_update((np.ones((3, 8)), np.ones(3)), (np.ones((3, 8)), None), lr=0.1),
     "different heads"),
    (lambda: interop.head_update(np.ones((3, 8)), (np.ones((3, 8)), None), lr=0.1), "must be a pair"),
])
def test_bad_inputs_are_refused_naming_the_fix(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")     # deprecated by torch, still there
def test_integer_and_quantized_weights_are_refused():
  # Integer weights were read as floats: a cast gone wrong (truncated values) or a quantized tensor without its
  # scale gave a plausible-looking gradient. A quantized torch tensor ended in torch's own "unsupported ScalarType".
  w = np.array([[0.6, -1.7], [2.2, 0.4], [0.1, 0.9]])                   # [C = 3, D = 2]
  for bad in (w.astype(np.int32), w.astype(np.uint8), w.astype(np.int64).tolist(), torch.tensor(w).to(torch.int8)):
    with pytest.raises(TypeError, match="real-valued.*floating-point"):
      interop.head_gradient(bad)
  with pytest.raises(TypeError, match="before weight: has dtype int64"):
    interop.head_delta(w.astype(np.int64), w)
  with pytest.raises(TypeError, match=r"bias: has dtype int32"):
    interop.head_update((w, np.zeros(3)), (w, np.zeros(3, np.int32)), lr=0.1)
  q = torch.quantize_per_tensor(torch.tensor(w, dtype=torch.float32), 0.1, 0, torch.qint8)
  with pytest.raises(TypeError, match=r"quantized torch tensor.*dequantize\(\)"):
    interop.head_gradient(q)
  np.testing.assert_allclose(interop.head_gradient(q.dequantize()).kernel, np.round(w / 0.1).T * 0.1, rtol=1e-6)


def test_register_refuses_a_taken_name_unless_replace():
  spec = models.spec("mlp")
  with pytest.raises(ValueError, match="replace=True"):
    models.register("mlp", spec.cls)
  try:
    assert models.register("mlp", spec.cls, uses=spec.uses, summary=spec.summary, replace=True) == spec
  finally:
    models.register("mlp", spec.cls, uses=spec.uses, summary=spec.summary, replace=True)


def test_head_delta_of_torch_layout_weights_is_the_eavesdrop_global_update():
  from jaxleak.runs import eavesdrop as EV
  fed = EV.setup(EV.EavesdropConfig(dataset="digits", rounds=1, num_participants=8, fraction=0.25,
                                    samples_per_label=8, other_samples=2))
  new_vars, update, _, _ = EV.play_round(fed, fed.variables, t=0)
  before = np.array(fed.variables["params"]["head"]["kernel"]).T              # as a torch federation holds it
  after = np.array(new_vars["params"]["head"]["kernel"]).T
  np.testing.assert_allclose(interop.head_delta(torch.from_numpy(before), torch.from_numpy(after)), update,
                             rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="different heads"):
    interop.head_delta(before, after[:, :-1])
