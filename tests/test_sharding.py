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


# Batch-level LDP of the head is element-wise after the (sharded) gradient: {} covers it; per-example clipping
# changes the sharded computation itself.
@pytest.mark.parametrize("extra", [{}, {"ldp": L.ldp_setting(0.05, 0.5, scope="last_layer", granularity="per_example")},
                                   {"local": LocalSteps(steps=2, batch_size=25), "minmax": False}])
def test_sharded_updates_equal_unsharded(extra):
  cfg = L.LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=50, num_clients=3, **extra)
  assert jax.local_device_count() == 4
  grads = {}
  for shard in (True, False):
    c = dataclasses.replace(cfg, shard=shard)
    prep = prepare(c, None, None, None)
    assert (prep.mesh is not None) == shard
    grads[shard] = compute_updates(prep, c, c.ldp, None)
  chex.assert_trees_all_close(grads[True], grads[False], rtol=1e-4, atol=1e-6)


def test_sharded_updates_with_a_model_per_batch_equal_unsharded():
  """Trained folds: every update has its own global model (variables gathered per update, a grouped conv under
  vmap). TinyHAR's last conv spans its whole input; see test_xla_partitions_a_per_batch_conv_... below.
  (DeepConvLSTM has no such conv; its per-batch sharding was checked by hand to agree to 1e-6.)"""
  cfg = L.LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=50, num_clients=3)
  grads = {}
  for shard in (True, False):
    c = dataclasses.replace(cfg, shard=shard)
    prep = prepare(c, None, None, None)
    folds = 3
    scale = (1 + 0.05 * np.arange(folds)).astype(np.float32)
    stacked = jax.tree.map(lambda a: a[None] * scale.reshape((folds,) + (1,) * a.ndim), prep.variables)
    prep = dataclasses.replace(prep, variables=stacked,
                               fold_of_batch=(np.arange(len(prep.indices)) % folds).astype(np.int32))
    grads[shard] = compute_updates(prep, c, c.ldp, None)
  chex.assert_trees_all_close(grads[True], grads[False], rtol=1e-4, atol=1e-6)


@pytest.mark.xfail(strict=False, reason="XLA SPMD partitioner bug (jax 0.10.2, XLA:CPU): worked around by "
                   "jaxleak.models.layers.pad_full_window; an XPASS means XLA fixed it")
def test_xla_partitions_a_per_batch_conv_spanning_its_input_wrongly():
  """The reproduction behind pad_full_window: a VALID conv whose kernel (9) spans its whole input (9 steps),
  vmapped over per-batch weights and sharded over the batch, differs from the same conv batch by batch."""
  from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
  mesh = Mesh(np.array(jax.devices()), ("batch",), axis_types=(AxisType.Auto,))
  k1, k2 = jax.random.split(jax.random.key(0))
  x = jax.random.normal(k1, (8, 150, 9, 20))
  w = jax.random.normal(k2, (8, 9, 20, 20)) * 0.1
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (2,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
  put = lambda a: jax.device_put(a, NamedSharding(mesh, PartitionSpec("batch")))
  sharded = jax.jit(jax.vmap(conv))(put(x), put(w))
  one_by_one = np.stack([conv(x[i], w[i]) for i in range(8)])
  np.testing.assert_allclose(sharded, one_by_one, atol=1e-4)


def test_padding_a_full_window_conv_changes_nothing():
  from jaxleak.models.layers import pad_full_window
  x = jax.random.normal(jax.random.key(0), (4, 9, 3))
  w = jax.random.normal(jax.random.key(1), (9, 3, 5))
  conv = lambda x: jax.lax.conv_general_dilated(x, w, (2,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
  assert pad_full_window(x, 9).shape == (4, 10, 3) and pad_full_window(x, 7) is x
  np.testing.assert_allclose(conv(pad_full_window(x, 9)), conv(x), atol=1e-6)


def test_sharded_single_step_counts_equal_unsharded():
  cfg = L.LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=50, num_clients=3,
                           attacks=("ebi", "llbg", "llg"))
  a, b = L.run_leakage(cfg), L.run_leakage(dataclasses.replace(cfg, shard=False))
  for attack in cfg.attacks:
    np.testing.assert_array_equal(a.pred_counts[attack], b.pred_counts[attack])
