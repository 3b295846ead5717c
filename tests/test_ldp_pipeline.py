"""LDP inside the single-step pipeline: the shared sweep equals separate runs; the cheap clip equals the transform."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxleak import models, privacy
from jaxleak.federated import LdpConfig, batch_grad_fn, minmax_scale
from jaxleak.runs.leakage import (PAPER_LDP_GRID, LeakageConfig, ldp_setting, paper_ldp_settings, run_ldp_sweep,
                             run_leakage)

CFG = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=50, num_clients=2,
                       attacks=("ebi", "llbg", "ilrg_uniform"))


def test_batch_ldp_of_the_head_equals_clipping_the_whole_gradient_tree():
  model = models.build("tinyhar", 5)
  v = models.init(model, jax.random.key(0), 50, 3)
  x = jax.random.normal(jax.random.key(1), (20, 50, 3))
  y = jax.random.randint(jax.random.key(2), (20,), 0, 5)
  key = jax.random.key(3)
  ldp = LdpConfig(clip_norm=0.05, noise_std=0.0, clip_scope="all")
  ours = jax.jit(batch_grad_fn(model, ldp=ldp))(v, x, y, key)

  def loss(p):
    logits, _ = model.apply({**v, "params": p}, minmax_scale(x), train=True, rngs={"dropout": key},
                            mutable=["batch_stats"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
  full = jax.jit(jax.grad(loss))(v["params"])
  assert float(optax.tree.norm(full)) > 0.05                                # clipping is active
  ref = privacy.privatize(full, privacy.clip(0.05))["head"]
  np.testing.assert_allclose(ours.kernel, ref["kernel"], rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(ours.bias, ref["bias"], rtol=1e-5, atol=1e-8)


def test_sweep_equals_separate_runs():
  # Whole-model clipping inside a run is covered by test_pure_clipping_keeps_ebi_and_llbg_but_moves_ilrg_uniform.
  settings = {"clip_head": ldp_setting(0.05, 0.2, scope="last_layer"), "noise": ldp_setting(0.1, 0.0)}
  sweep = run_ldp_sweep(CFG, settings)
  for name, ldp in settings.items():
    alone = run_leakage(dataclasses.replace(CFG, ldp=ldp))
    for attack in CFG.attacks:
      np.testing.assert_array_equal(sweep[name].pred_counts[attack], alone.pred_counts[attack], err_msg=name)


def test_pure_clipping_keeps_ebi_and_llbg_but_moves_ilrg_uniform():
  plain = run_leakage(CFG)
  clipped = run_leakage(dataclasses.replace(CFG, ldp=ldp_setting(0.0, 0.01)))
  for attack in ("ebi", "llbg"):
    np.testing.assert_array_equal(plain.pred_counts[attack], clipped.pred_counts[attack])
  assert not np.array_equal(plain.pred_counts["ilrg_uniform"], clipped.pred_counts["ilrg_uniform"])


def test_noise_lowers_leakage():
  plain = run_leakage(CFG)
  noisy = run_leakage(dataclasses.replace(CFG, ldp=ldp_setting(1.0, 0.0)))
  lnacc = lambda r: float(np.nanmean(r.client_metrics["ilrg_uniform"].lnacc))
  assert lnacc(noisy) < lnacc(plain) - 0.1


def test_per_example_clipping_runs_for_both_scopes():
  cfg = dataclasses.replace(CFG, num_clients=1)
  for scope in ("last_layer", "all"):
    r = run_leakage(dataclasses.replace(cfg, ldp=ldp_setting(0.01, 0.5, scope=scope, granularity="per_example")))
    assert all(np.all(p.sum(1) == 50) for p in r.pred_counts.values())


def test_paper_grid_names_and_identity():
  settings = paper_ldp_settings()
  assert len(settings) == 10 and settings["none"].is_identity
  assert settings["ldp_0.1_0.0"].clip_norm == math.inf and settings["ldp_0.0_1.5"].clip_norm == 1.5
  assert len(PAPER_LDP_GRID) == 9
  with pytest.raises(ValueError, match=r"noise must be a number in \[0, 3.403e\+38\] \(0 = off"):
    ldp_setting(-0.1, 0.0)
  with pytest.raises(ValueError, match="clip scope"):
    LdpConfig(clip_norm=1.0, clip_scope="head")
