"""Sharded equals unsharded: batches spread over the 4 fake CPU devices of conftest.py.

Sharded calls hold a device-count multiple of batches, so XLA may fuse differently: the updates agree to float
tolerance (asserted here), and counts computed from them can differ only where an attack sits on a rounding or
argmin tie.
"""
import dataclasses

import chex
import jax
import numpy as np
import pytest

from jaxleak.federated import LocalSteps
from jaxleak.runs import leakage as L
from jaxleak.runs.leakage.prepare import prepare
from jaxleak.runs.leakage.updates import compute_updates

pytestmark = pytest.mark.skipif(jax.local_device_count() < 2, reason="needs several (fake) devices")


@pytest.mark.parametrize("extra", [{}, {"ldp": L.ldp_setting(0.05, 0.5)},
                                   {"ldp": L.ldp_setting(0.0, 0.5, scope="last_layer", granularity="per_example")},
                                   {"local": LocalSteps(steps=2, batch_size=25), "minmax": False}])
def test_sharded_updates_equal_unsharded(extra):
  cfg = L.LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=50, num_clients=3, **extra)
  assert jax.local_device_count() == 4
  grads = {}
  for shard in (True, False):
    c = dataclasses.replace(cfg, shard=shard)
    prep = prepare(c, None, None, None)
    assert (prep.mesh is not None) == shard      # (multi-step calls ignore the mesh, see updates.compute_updates)
    grads[shard] = compute_updates(prep, c, c.ldp, None)
  chex.assert_trees_all_close(grads[True], grads[False], rtol=1e-4, atol=1e-6)


def test_sharded_single_step_counts_equal_unsharded():
  cfg = L.LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=50, num_clients=3,
                           attacks=("ebi", "llbg", "llg"))
  a, b = L.run_leakage(cfg), L.run_leakage(dataclasses.replace(cfg, shard=False))
  for attack in cfg.attacks:
    np.testing.assert_array_equal(a.pred_counts[attack], b.pred_counts[attack])
