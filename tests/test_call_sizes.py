"""How many updates one compiled call holds (`updates.call_size`): few sizes, little padding, and runs whose update
counts differ a little reuse one compiled program (the gradient pass here; a study's LDP sweep: test_study.py)."""
import dataclasses

import jax
import numpy as np
import pytest

from jaxleak.runs.leakage import LeakageConfig
from jaxleak.runs.leakage.prepare import prepare, take_updates
from jaxleak.runs.leakage.updates import call_size, compute_updates


@pytest.mark.parametrize("limit,unit", [(1, 1), (8, 1), (50, 1), (64, 1), (512, 1), (64, 4), (8, 3)])
def test_call_sizes_need_no_more_calls_pad_little_and_are_few(limit, unit):
  sizes = set()
  for count in range(1, 3000):
    size = call_size(count, limit, unit)
    evened = -(-count // -(-count // limit))                 # the fewest calls, evened out: the least padding
    assert size % unit == 0 and evened <= size <= -(-min(limit, evened * 9 // 8) // unit) * unit, (count, size)
    if unit == 1:
      assert -(-count // size) == -(-count // limit)          # as many calls as the limit needs
    sizes.add(size)
  # Exact evening takes every size up to the limit; here at most eight per octave (the first 16 exactly).
  assert len(sizes) <= 16 + 8 * max(0, limit.bit_length() - 4), sorted(sizes)


def test_call_size_refuses_what_is_not_a_size():
  for args in ((0, 8), (5, 0), (5, 8, 0)):
    with pytest.raises(ValueError, match="must be >= 1"):
      call_size(*args)


def test_a_run_with_a_few_updates_fewer_reuses_the_compiled_gradient_pass():
  from jaxleak.federated.single_step import _last_layer_grads
  cfg = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=10, batches_per_call=64)
  prep = dataclasses.replace(prepare(cfg, None, None, None), mesh=None)     # unsharded (the tests force 4 devices)
  assert len(prep.indices) == 120                            # 2 calls of 60
  whole = compute_updates(prep, cfg, cfg.ldp, None)
  compiled = _last_layer_grads._cache_size()
  fewer = compute_updates(take_updates(prep, np.arange(116)), cfg, cfg.ldp, None)   # 2 calls: 58 evened, 60 rounded
  assert _last_layer_grads._cache_size() == compiled
  for a, b in zip(jax.tree.leaves(fewer), jax.tree.leaves(whole)):
    np.testing.assert_array_equal(a, np.asarray(b)[:116])


def test_updates_vmapped_together_on_cpu_as_measured_and_on_accelerators_by_windows(monkeypatch):
  from jaxleak.federated import LocalSteps
  single = lambda n, **kw: LeakageConfig(num_samples=n, **kw)
  multi = lambda n, b, s: LeakageConfig(num_samples=n, local=LocalSteps(batch_size=b, steps=s))
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert [single(100).vmap_chunk(f) for f in (True, False)] == [1, 8]
  assert multi(100, 20, 5).vmap_chunk(True) == 1 and single(100, chunk_size=5).vmap_chunk(True) == 5
  for backend in ("gpu", "tpu"):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    # the largest power of two of updates within 6,400 windows, 8 to 256
    assert [single(n).vmap_chunk(f) for n in (100, 500, 20, 10, 5000) for f in (True, False)] == [
        64, 64, 8, 8, 256, 256, 256, 256, 8, 8]
    assert [multi(*nbs).vmap_chunk(True) for nbs in ((100, 20, 5), (100, 50, 2), (500, 100, 5), (20, 10, 2))] == [
        64, 64, 8, 256]
    assert single(100, chunk_size=5).vmap_chunk(True) == 5            # a chunk given is used as given
