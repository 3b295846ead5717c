"""LDP transforms: norms, noise statistics, agreement with optax's DP aggregate, identities, attack effects."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxleak.attacks as A
from jaxleak import LastLayerGrads, privacy as P
from jaxleak.federated import LocalSteps
from jaxleak.federated.rounds import LocalEpochs
from tests.helpers import labels_from_counts, mean_ce_head_grads, random_head

KEY = jax.random.key(0)


def _tree(seed=0, scale=3.0):
  k = jax.random.split(jax.random.key(seed), 3)
  return {"conv": {"kernel": scale * jax.random.normal(k[0], (5, 4))},
          "head": {"kernel": scale * jax.random.normal(k[1], (4, 3)), "bias": scale * jax.random.normal(k[2], (3,))}}


def _global_norm(tree):
  return float(optax.tree.norm(tree))


def test_batch_clip_scope_all_bounds_the_global_norm():
  g = _tree()
  out = P.privatize(g, P.clip(1.5))
  assert abs(_global_norm(out) - 1.5) < 1e-5
  ratio = out["conv"]["kernel"] / g["conv"]["kernel"]
  np.testing.assert_allclose(ratio, ratio.ravel()[0], rtol=1e-5)          # one factor for every leaf


def test_clip_below_the_threshold_is_identity():
  g = _tree(scale=0.01)
  out = P.privatize(g, P.clip(100.0))
  jax.tree.map(np.testing.assert_array_equal, out, g)


def test_last_layer_scope_clips_only_the_head():
  g = _tree()
  out = P.privatize(g, P.clip(0.5, scope="last_layer"))
  np.testing.assert_array_equal(out["conv"]["kernel"], g["conv"]["kernel"])
  assert abs(_global_norm(out["head"]) - 0.5) < 1e-5
  with pytest.raises(ValueError, match="no leaf under a key named 'classifier'"):
    P.privatize(g, P.clip(0.5, scope="last_layer", head_key="classifier"))


def test_per_example_clip_averages_clipped_examples():
  g = jax.tree.map(lambda x: jnp.stack([x, 0.01 * x, -2 * x]), _tree())   # 3 examples
  out = P.privatize(g, P.clip(1.0, granularity="per_example"))
  norms = [_global_norm(jax.tree.map(lambda x: x[i], g)) for i in range(3)]
  expected = jax.tree.map(lambda x: (x[0] / (norms[0] + 1e-6) + x[1] + x[2] / (norms[2] + 1e-6)) / 3, g)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), out, expected)


def test_per_example_path_agrees_with_optax_differentially_private_aggregate():
  g = jax.tree.map(lambda x: jnp.stack([x * s for s in (1.0, 0.2, -3.0, 0.7)]), _tree())
  tau, mult, b = 1.0, 0.8, 4
  # Same clipping and averaging (up to the 1e-6 in our denominator): compare noise-free outputs exactly. The
  # noise comes from different streams, so its std is compared statistically: optax adds N(0, (tau*mult)^2) to
  # the sum and divides by B; ours adds std tau*mult/B to the mean.
  ours0 = P.privatize(g, P.clip(tau, granularity="per_example"))
  ref0 = P.privatize(g, optax.contrib.differentially_private_aggregate(tau, 0.0, key=KEY))
  jax.tree.map(lambda a, r: np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-7), ours0, ref0)
  big = {"w": jnp.zeros((4, 200_000))}
  n_ours = P.privatize(big, optax.chain(P.clip(tau, granularity="per_example"), P.gaussian_noise(tau * mult / b,
                                                                                                   key=KEY)))
  n_ref = P.privatize(big, optax.contrib.differentially_private_aggregate(tau, mult, key=KEY))
  assert abs(float(jnp.std(n_ours["w"])) / float(jnp.std(n_ref["w"])) - 1) < 0.01


def test_noise_mean_and_std_and_determinism():
  z = {"w": jnp.zeros((400, 500))}
  out = P.privatize(z, P.gaussian_noise(0.1, key=KEY))
  assert abs(float(jnp.mean(out["w"]))) < 1e-3 and abs(float(jnp.std(out["w"])) - 0.1) < 1e-3
  again = P.privatize(z, P.gaussian_noise(0.1, key=KEY))
  np.testing.assert_array_equal(out["w"], again["w"])
  other = P.privatize(z, P.gaussian_noise(0.1, key=jax.random.key(1)))
  assert not np.array_equal(out["w"], other["w"])
  mult = P.privatize(z, P.gaussian_noise(noise_multiplier=2.0, clip_norm=0.05, key=KEY))
  np.testing.assert_allclose(mult["w"], out["w"], rtol=1e-6)


def test_noise_on_a_low_precision_update_is_rounded_once():
  """Noise is drawn in float32 and added at float32 before the one rounding to the leaf's dtype. Before
  (2026-12-05), a bfloat16 leaf got its noise rounded to bfloat16 first, then the sum rounded again; float32 leaves
  are unchanged (the same values as x + noise)."""
  x = jnp.linspace(-3.0, 3.0, 4096, dtype=jnp.float32)
  noise_f32 = P.privatize({"w": jnp.zeros_like(x)}, P.gaussian_noise(0.01, key=KEY))["w"]
  got = P.privatize({"w": x.astype(jnp.bfloat16)}, P.gaussian_noise(0.01, key=KEY))["w"]
  assert got.dtype == jnp.bfloat16
  want = (x.astype(jnp.bfloat16).astype(jnp.float32) + noise_f32).astype(jnp.bfloat16)
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
  twice = x.astype(jnp.bfloat16) + noise_f32.astype(jnp.bfloat16)              # the old double rounding
  assert not np.array_equal(np.asarray(got, np.float32), np.asarray(twice, np.float32))
  np.testing.assert_array_equal(P.privatize({"w": x}, P.gaussian_noise(0.01, key=KEY))["w"], x + noise_f32)


def test_noise_state_advances_the_key():
  tx = P.gaussian_noise(1.0, key=KEY)
  z = {"w": jnp.zeros(10)}
  s0 = tx.init(z)
  a, s1 = tx.update(z, s0)
  b, _ = tx.update(z, s1)
  assert not np.array_equal(a["w"], b["w"])


def test_identities():
  g = _tree()
  out = P.privatize(g, P.ldp(math.inf, 0.0, key=KEY))
  jax.tree.map(np.testing.assert_array_equal, out, g)
  jax.tree.map(np.testing.assert_array_equal, P.privatize(g, P.top_k_compress(0.0)), g)


def test_top_k_compress_keeps_the_largest_entries():
  g = {"a": jnp.array([0.1, -5.0, 0.3]), "b": jnp.array([[2.0, -0.2], [0.05, 1.0]])}
  out = P.privatize(g, P.top_k_compress(4 / 7))                          # keep ceil(3/7 * 7) = 3
  np.testing.assert_array_equal(out["a"], [0.0, -5.0, 0.0])
  np.testing.assert_array_equal(out["b"], [[2.0, 0.0], [0.0, 1.0]])


def test_bad_arguments():
  with pytest.raises(ValueError, match="granularity"):
    P.clip(1.0, granularity="per_user")
  with pytest.raises(ValueError, match="positive"):
    P.clip(0.0)
  with pytest.raises(ValueError, match="exactly one"):
    P.gaussian_noise(key=KEY)
  with pytest.raises(ValueError, match="needs a PRNG key"):
    P.ldp(1.0, 0.1, key=None)
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    P.top_k_compress(1.0)
  with pytest.raises(TypeError, match="clip norm must be a number, got '1' "):      # was: '>' not supported
    P.clip("1")
  with pytest.raises(TypeError, match="stddev must be a number"):
    P.ldp(1.0, "0.1", key=KEY)
  with pytest.raises(TypeError, match="noise_multiplier must be a number"):
    P.gaussian_noise(noise_multiplier=[1.0], clip_norm=1.0, key=KEY)
  # Found 2026-12-04 (thirteenth session): a string ratio ended in '<=' not supported; an int key was accepted and
  # failed at the first update in JAX's words ('invalid PRNG key data').
  with pytest.raises(TypeError, match="compression_ratio must be a number in \\[0, 1\\)"):
    P.top_k_compress("0.5")
  with pytest.raises(TypeError, match="gaussian_noise: key must be one JAX PRNG key"):
    P.gaussian_noise(0.1, key=0)
  P.gaussian_noise(0.1, key=jax.random.PRNGKey(0))                  # a raw uint32[2] key is a key


def test_values_float32_cannot_hold_are_refused_not_made_inf():
  """Found 2026-12-05 (nineteenth session, a flag fuzzer): a clip norm, noise std or learning rate of 1e300 passed
  every check (finite in Python) and became inf in float32: no clipping, infinite noise or an infinite step, the
  last ending in a 'not finite' error after local training. The largest float32 itself is still a value."""
  big, top = 1e300, float(np.finfo(np.float32).max)
  for make in (lambda: P.clip(big), lambda: P.gaussian_noise(big, key=KEY), lambda: P.LdpConfig(clip_norm=big),
               lambda: P.LdpConfig(noise_std=big),
               lambda: P.gaussian_noise(noise_multiplier=big, clip_norm=1.0, key=KEY)):
    with pytest.raises(ValueError, match=r"is beyond float32 \(at most 3.403e\+38\)"):
      make()
  for make in (lambda: LocalEpochs(lr=big), lambda: LocalSteps(steps=1, batch_size=1, lr=big)):
    with pytest.raises(ValueError, match=r"the learning rate a number in \(0, 3.403e\+38\] \(float32\)"):
      make()
  P.LdpConfig(clip_norm=top, noise_std=top), P.clip(math.inf), LocalEpochs(lr=top), LocalSteps(1, 1, lr=top)
  with pytest.raises(ValueError, match="clip norm must be positive|positive"):
    P.clip(-big)                                                    # negative: the sign is the problem, not the size


def test_both_local_trainings_refuse_the_same_hyper_parameters_in_the_same_words():
  """LocalEpochs (Eavesdrop) and LocalSteps (HAR multi-step) share one check: counts positive ints (not bools), the
  learning rate a positive float32 number (not nan, not a bool)."""
  for make, counts in ((LocalEpochs, "local epochs and batch size"), (LocalSteps, "local steps and batch size")):
    for args in ((0, 1, 0.1), (1, 0, 0.1), (True, 1, 0.1), (1.5, 1, 0.1), (1, 1, 0.0), (1, 1, -0.1),
                 (1, 1, math.nan), (1, 1, True), (1, 1, "0.1")):
      with pytest.raises(ValueError, match=f"{counts} must be positive integers, the learning rate a number in"):
        make(*args)
    assert make(2, 3, 0.5).lr == 0.5 and make(np.int64(2), 3, np.float32(0.5)).batch_size == 3


def test_ldp_injectable_refuses_concrete_nonsense_and_passes_traced_values():
  """Found 2026-12-05 (seventeenth session): ldp_injectable took a negative or NaN clip norm (clipping then flips
  the update's sign: factor -1 / norm), a NaN or negative noise std, an int key and an unknown granularity, all
  without a word until (or, for the values, even after) the first update."""
  g = jnp.full((4,), 3.0)
  for clip_norm, noise in ((-1.0, 0.0), (float("nan"), 0.0), (jnp.array([1.0, 0.0]), 0.0)):
    with pytest.raises(ValueError, match="every clip_norm must be > 0"):
      P.ldp_injectable(clip_norm, noise, key=KEY)
  for noise in (-0.1, float("nan"), np.array([0.1, np.inf]), 1e300):
    with pytest.raises(ValueError, match=r"every noise_std must be finite in float32 \(<= 3.403e\+38\) and >= 0"):
      P.ldp_injectable(1.0, noise, key=KEY)
  with pytest.raises(TypeError, match="clip_norm must be a number or an array of numbers"):
    P.ldp_injectable("1", 0.0, key=KEY)
  with pytest.raises(TypeError, match="ldp_injectable: key must be one JAX PRNG key"):
    P.ldp_injectable(1.0, 0.1, key=0)
  with pytest.raises(ValueError, match="unknown clip granularity 'x'"):
    P.ldp_injectable(1.0, 0.1, key=KEY, granularity="x")
  np.testing.assert_allclose(P.privatize(g, P.ldp_injectable(1.0, 0.0, key=KEY)), 0.5, rtol=1e-6)
  swept = jax.vmap(lambda t: P.privatize(g, P.ldp_injectable(t, 0.0, key=KEY)))(jnp.array([1.0, jnp.inf]))
  np.testing.assert_allclose(swept, [[0.5] * 4, [3.0] * 4], rtol=1e-6)          # traced values are not inspected


def test_updates_that_cannot_carry_the_transform_are_refused():
  """Found 2026-12-04 (fourteenth session): noise of std 0.4 on an int32 update was cast back to int32 (truncated
  to 0: the update went out unchanged, with no privacy), clipping an int32 update zeroed it, and per-example
  clipping took a leaf with no example axis or leaves with different leading sizes (their norms broadcast)."""
  ints = {"w": jnp.array([3, 4], jnp.int32)}
  noise = P.gaussian_noise(0.4, key=KEY)
  with pytest.raises(TypeError, match=r"gaussian_noise: the update leaf \['w'\] has dtype int32"):
    noise.update(ints, noise.init(ints))
  for t in (P.clip(1.0), P.ldp(1.0, 0.1, key=KEY)):
    with pytest.raises(TypeError, match=r"clip: the update leaf \['w'\] has dtype int32"):
      t.update(ints, t.init(ints))
  per_example = P.clip(1.0, granularity="per_example")
  for bad in ({"w": jnp.ones(())}, {"a": jnp.ones((5, 3)), "b": jnp.ones((1, 3))}):
    with pytest.raises(ValueError, match="every leaf needs one leading example axis of the same size"):
      per_example.update(bad, None)
  # Python floats are leaves too (a list in a tree is a container of them)
  out, _ = noise.update({"w": [1.0, 2.0]}, noise.init(None))
  assert np.asarray(out["w"]).shape == (2,) and not np.array_equal(np.asarray(out["w"]), [1.0, 2.0])


def test_pure_clipping_leaves_ebi_llbg_llg_unchanged_but_breaks_ilrg_uniform():
  counts = np.array([40, 3, 0, 0, 1, 6, 0, 0, 0])
  k1, k2 = jax.random.split(jax.random.key(1))
  head = random_head(k1, 64, 9, 1e-3)
  grads = mean_ce_head_grads(jax.random.normal(k2, (50, 64)), jnp.asarray(labels_from_counts(counts)),
                             head.kernel, head.bias)
  clipped = P.privatize(grads, P.clip(0.01))
  assert isinstance(clipped, LastLayerGrads) and abs(_global_norm(clipped) - 0.01) < 1e-6
  for name in ("ebi", "llbg", "llg"):
    np.testing.assert_array_equal(A.get(name)(grads, 50), A.get(name)(clipped, 50))
  np.testing.assert_array_equal(A.ilrg_uniform(grads, 50, key=KEY), counts)
  assert not np.array_equal(np.asarray(A.ilrg_uniform(clipped, 50, key=KEY)), counts)


def test_transforms_jit_and_vmap():
  g = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), _tree())
  keys = jax.random.split(KEY, 2)
  f = jax.jit(jax.vmap(lambda t, k: P.privatize(t, P.ldp(1.0, 0.1, key=k))))
  out = f(g, keys)
  loop = [P.privatize(jax.tree.map(lambda x: x[i], g), P.ldp(1.0, 0.1, key=keys[i])) for i in range(2)]
  jax.tree.map(lambda a, *b: np.testing.assert_allclose(a, np.stack(b), rtol=1e-5, atol=1e-6), out, *loop)
