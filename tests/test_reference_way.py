"""The PyTorch reference-way benchmark computes what jaxleak computes: the same model function, and the same
counts as jaxleak's HAR-reference attacks on the same gradients (benchmarks/torch_reference.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the optional extra 'torch' (pip install -e '.[torch]')")

import jaxleak.attacks as A                                                # noqa: E402
from benchmarks import torch_reference as R                                # noqa: E402
from jaxleak import models                                                 # noqa: E402
from jaxleak.federated import mean_ce                                      # noqa: E402
from jaxleak.types import LastLayerGrads                                   # noqa: E402


@pytest.fixture(scope="module")
def twins():
  flax_model = models.build("deepconvlstm", 13)
  v = models.init(flax_model, jax.random.key(0), 50, 6)
  torch_model = R.load_flax_params(R.DeepConvLSTM(6, 13), v["params"])
  return flax_model, v, torch_model


def test_the_torch_twin_computes_the_same_logits_and_head_gradients(twins):
  flax_model, v, torch_model = twins
  x = np.array(jax.random.uniform(jax.random.key(1), (8, 50, 6)))
  y = np.arange(8) % 13
  torch_model.eval()
  xt = torch.from_numpy(x).unsqueeze(1)
  logits_t = torch_model(xt)
  np.testing.assert_allclose(logits_t.detach().numpy(), flax_model.apply(v, x), atol=2e-5)
  loss = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(y))
  gw, gb = torch.autograd.grad(loss, [torch_model.head.weight, torch_model.head.bias])
  g = jax.grad(lambda p: mean_ce(flax_model.apply({"params": p}, x), y))(v["params"])["head"]
  np.testing.assert_allclose(gw.numpy().T, g["kernel"], atol=1e-6)
  np.testing.assert_allclose(gb.numpy(), g["bias"], atol=1e-6)


def _jaxleak_counts(name, gw, gb, n, star=None, key=0):
  grads = LastLayerGrads(kernel=jnp.asarray(gw.numpy().T), bias=jnp.asarray(gb.numpy()))
  ctx = A.AttackContext(key=jax.random.key(key), star_params=star)
  return np.asarray(A.run(R.JAXLEAK_TWIN[name], grads, n, ctx))


def test_the_worked_example_of_the_spec():
  """Spec 2.11: C = 4, N = 10, g_b = (-0.25, -0.05, 0.05, 0.25) (a uniform model, counts (5, 3, 2, 0))."""
  gb = torch.tensor([-0.25, -0.05, 0.05, 0.25], dtype=torch.float64)
  gw = gb[:, None].repeat(1, 3) / 3                           # row sums = g_b
  assert R.ebi(gw, gb, 10).tolist() == [8, 2, 0, 0]
  assert R.llbg(gw, gb, 10).tolist() == [8, 2, 0, 0]
  assert R.ilrg(gw, gb, 10).tolist() == [5, 3, 2, 0]
  assert R.llg(gw, gb, 10).tolist() == [9, 1, 0, 0]


@pytest.mark.parametrize("seed", range(8))
def test_the_reference_attacks_give_jaxleaks_counts_on_the_same_gradients(seed):
  rng = np.random.default_rng(seed)
  c, d, n = int(rng.choice([4, 13])), 16, int(rng.choice([10, 100]))     # few shapes: few compilations
  counts = rng.multinomial(n, rng.dirichlet(np.full(c, 0.5)))
  probs = rng.dirichlet(np.full(c, 20.0), size=n)             # near-uniform model outputs
  onehot = np.repeat(np.eye(c), counts, axis=0)
  err = probs - onehot                                         # dL/dz per sample, [N, C]
  h = rng.normal(size=(n, d))
  gw = torch.from_numpy((err.T @ h / n).astype(np.float32))    # [C, D]
  gb = torch.from_numpy(err.mean(0).astype(np.float32))
  for name in ("llg", "ebi", "llbg"):
    np.testing.assert_array_equal(getattr(R, name)(gw, gb, n), _jaxleak_counts(name, gw, gb, n), err_msg=name)
  m, s = float(rng.normal() * 1e-3), torch.from_numpy(rng.normal(size=c).astype(np.float32) * 1e-4)
  star = A.LLGStarParams(impact=jnp.float32(m), offsets=jnp.asarray(s.numpy()))
  np.testing.assert_array_equal(R.llg_star(gw, gb, n, m, s), _jaxleak_counts("llg_star", gw, gb, n, star))
  # iLRG: equal up to the random padding of a shortfall (both pad with uniformly random labels).
  before_padding = R.ilrg(gw, gb, n, return_unpadded=True)
  ours = _jaxleak_counts("ilrg", gw, gb, n)
  assert ours.sum() == n and np.all(ours >= before_padding)
  if before_padding.sum() == n:
    np.testing.assert_array_equal(ours, before_padding)


@pytest.mark.parametrize("seed", range(8))
def test_the_other_strategies_in_the_references_style_give_jaxleaks_counts(seed):
  """bias_corrected and yin (spec 2.7) written as loops over Python lists (torch_reference) against jaxleak's
  vectorised ones, on gradients where the negative classes do and do not fit in N (N < C here half the time)."""
  rng = np.random.default_rng(100 + seed)
  c, d = 13, 16
  n = int(rng.choice([3, 5, 40]))
  gw = torch.from_numpy(rng.normal(size=(c, d)).astype(np.float32) * 0.1)
  gb = torch.from_numpy(rng.normal(size=c).astype(np.float32) * 0.1)
  grads = LastLayerGrads(kernel=jnp.asarray(gw.numpy().T), bias=jnp.asarray(gb.numpy()))
  np.testing.assert_array_equal(R.bias_corrected(gw, gb, n), A.bias_corrected(grads, n))
  ours = np.asarray(A.yin(grads, n, key=jax.random.key(seed)))
  before_padding = R.yin(gw, gb, n, return_unpadded=True)
  assert ours.sum() == n and np.all(ours >= before_padding)           # both pad with uniformly random labels
  if n <= c:
    np.testing.assert_array_equal(ours, before_padding)


def test_gcd_in_the_references_style_gives_jaxleaks_counts():
  """The HAR code's older `gcd` (spec 2.7) as loops over Python floats and torch remainders (torch_reference)
  against jaxleak's vectorised one, on 160 bias gradients: half an untrained head's (softmax - one-hot averages
  over N windows, where differences of entries sit near multiples of 1/N and candidates survive the divisibility
  check), half Gaussian; C in {4, 6, 13}, N in {3, 8, 40, 100} (|V| > N included)."""
  gcd, bias_corrected = (jax.jit(f, static_argnums=1) for f in (A.gcd, A.bias_corrected))
  candidates = jax.jit(A.gcd_candidates)
  survived = differs = 0
  for seed in range(160):
    rng = np.random.default_rng(seed)
    c, n = int(rng.choice([4, 6, 13])), int(rng.choice([3, 8, 40, 100]))
    if seed % 2:
      gb = (rng.normal(size=c) * 0.1).astype(np.float32)
    else:
      p = np.exp(rng.normal(size=c) * 0.3)
      labels = rng.choice(c, size=n, p=rng.dirichlet(np.full(c, 0.5)))
      gb = (p / p.sum() - np.bincount(labels, minlength=c) / n).astype(np.float32)
    grads = LastLayerGrads(kernel=jnp.zeros((4, c)), bias=jnp.asarray(gb))
    ours = np.asarray(gcd(grads, n))
    np.testing.assert_array_equal(R.gcd(torch.zeros((c, 4)), torch.from_numpy(gb), n), ours, err_msg=f"seed {seed}")
    survived += any(x < 0 and np.all(np.abs(np.remainder(gb, x)) <= 0.01) for x in np.asarray(candidates(grads)))
    differs += not np.array_equal(ours, np.asarray(bias_corrected(grads, n)))
  # Not vacuous: candidates other than m0 were used, and gcd's answer is not bias_corrected's every time.
  assert survived >= 10 and differs >= 2, (survived, differs)


def test_llg_star_dummy_estimates_vanish_as_the_spec_says(twins):
  """Spec 2.2: softmax-CE weight gradients sum to 0 over classes, so the reference's m and s are ~0."""
  _, _, torch_model = twins
  m, s = R.llg_star_estimates(torch_model, 20, (50, 6), 13)
  assert abs(m) < 1e-6 and float(s.abs().max()) < 1e-6


def test_one_reference_batch_returns_n_labels_per_attack(twins):
  _, _, torch_model = twins
  x = np.asarray(jax.random.normal(jax.random.key(2), (20, 50, 6)))
  out = R.reference_batch(torch_model, x, np.arange(20) % 13)
  assert set(out) == set(R.ATTACKS) and all(c.sum() == 20 for c in out.values())


def test_the_reconstruction_step_is_one_adam_step_down_the_gradient_matching_objective():
  """Adam's first step moves each coordinate by -lr g / (|g| + eps) (lr 1.0, eps 1e-8). g, the gradient of
  0.5 sum_p ||dL(x)/dp - t_p||^2 in the candidate x, comes here from central differences on a float64 copy using
  first-order autograd only, so the step's second-order backward is checked, not reused. Random targets t keep
  |g| above eps (steps of 0.99-1.0) except where g is near 0, where float32 cannot resolve it."""
  import copy

  torch.manual_seed(0)
  model = R.DeepConvLSTM(2, 3, filters=4, hidden=8)
  grads = [torch.randn_like(p) for p in model.parameters()]
  start, after, scaled = R.reconstruction_step(model, grads, np.array([1, 1, 1]), (34, 2))
  assert model.training                                     # the user's model is left in train mode

  model64 = copy.deepcopy(model).double().eval()
  targets = [g.double() for g in grads]

  def objective(x):
    loss = torch.nn.functional.cross_entropy(model64(x), torch.tensor([0, 1, 2]))
    rec = torch.autograd.grad(loss, list(model64.parameters()))
    return 0.5 * float(sum(((a - b) ** 2).sum() for a, b in zip(rec, targets)))

  x0 = start.double().reshape(-1)
  h = 1e-5
  fd = np.empty(x0.numel())
  for i in range(x0.numel()):
    e = torch.zeros_like(x0)
    e[i] = h
    fd[i] = (objective((x0 + e).reshape(start.shape)) - objective((x0 - e).reshape(start.shape))) / (2 * h)
  step = (after - start).numpy().reshape(-1)
  clear = np.abs(fd) > 1e-3 * np.abs(fd).max()
  assert clear.mean() > 0.5
  np.testing.assert_array_equal(np.sign(step[clear]), -np.sign(fd[clear]))
  np.testing.assert_allclose(step[clear], -fd[clear] / (np.abs(fd[clear]) + 1e-8), atol=1e-4)
  assert np.median(np.abs(step)) > 0.99
  assert float(scaled.min()) == 0.0 and float(scaled.max()) == 1.0


def test_a_reference_batch_with_the_reconstruction_step_gives_the_same_counts(twins):
  """The step draws random numbers, so without dropout (whose masks would then differ) the deterministic attacks
  must count exactly as without the step."""
  import copy

  torch_model = copy.deepcopy(twins[2])
  torch_model.dropout.p = 0.0
  x = np.asarray(jax.random.normal(jax.random.key(3), (20, 50, 6)))
  y = np.arange(20) % 13
  torch.manual_seed(5)
  plain = R.reference_batch(torch_model, x, y)
  torch.manual_seed(5)
  with_step = R.reference_batch(torch_model, x, y, reconstruction=True)
  for name in ("llg", "ebi", "llbg"):                       # deterministic: no random labels, no dummy batches
    np.testing.assert_array_equal(plain[name], with_step[name])
