"""jaxleak's main job next to the HAR reference's way of doing the same work in PyTorch, in one run.

  python benchmarks/reference_way.py                                   # HAPT, the README's main job
  python benchmarks/reference_way.py --dataset=synthetic_wear --synthetic_scale=0.25 --reference_batches=4

1. jaxleak: `experiments/single_step_leakage.py` (DeepConvLSTM, shuffle, N = 100, the five attacks) as a
   subprocess, twice: with an empty compilation cache (a first run on a machine) and again with the cache it
   filled (every later run). Wall time of the whole process: start-up, data loading, compilation, writing.
2. The reference way (`benchmarks/torch_reference.py`, eager PyTorch on this CPU): for a sample of the same
   job's batches, per-batch min-max, then for every attack a fresh train-mode forward + backward of the whole
   model and the attack as the reference computes it (LLG* with its 2C dummy passes). Time per batch x the job's
   number of batches = the reference's time for the job (its data loading and start-up not counted). Timed twice,
   alternating batch by batch: without and with the one iteration of breaching's data reconstruction that the
   reference runs after every attack and discards (spec 2.10). The first is the conservative figure (the label
   attacks alone, done the reference's way); the second is what a run of the reference code costs.
3. Outside the timing, the same sampled batches' PyTorch gradients go through jaxleak's twins of the reference
   attacks (llg_har, llg_star_har with the reference's own m and s, ebi, llbg, ilrg_uniform): the counts must be
   equal (iLRG: up to the random labels that pad a shortfall).

Needs the optional extra `torch` (pip install -e ".[torch]").
"""
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import torch_reference as R                       # noqa: E402 (needs the repository root)
from benchmarks.main_job import run_main_job                      # noqa: E402
import jaxleak.attacks as A                                       # noqa: E402
from jaxleak import data as D                                     # noqa: E402
from jaxleak import models                                        # noqa: E402
from jaxleak.types import LastLayerGrads                          # noqa: E402

import torch                                                      # noqa: E402
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "hapt", "hapt, synthetic_wear or synthetic_wetlab")
flags.DEFINE_float("synthetic_scale", 1.0, "size of the synthetic datasets (1.0 = the real dataset's size)")
flags.DEFINE_integer("reference_batches", 8, "batches timed the reference way (spread over the job's batches)",
                     lower_bound=1)
flags.DEFINE_bool("reconstruction_step", True, "also time the reference with its discarded reconstruction step")


def run_jaxleak(cache: str) -> float:
  return run_main_job(cache, [f"--dataset={FLAGS.dataset}", f"--synthetic_scale={FLAGS.synthetic_scale}"])[0]


def twin_counts(name, gw, gb, n, star=None):
  grads = LastLayerGrads(kernel=jnp.asarray(gw.numpy().T), bias=jnp.asarray(gb.numpy()))
  return np.asarray(A.run(R.JAXLEAK_TWIN[name], grads, n, A.AttackContext(key=jax.random.key(0),
                                                                            star_params=star)))


def check_counts(model, batches, clients, n, input_shape) -> tuple[int, int]:
  """(agreeing, compared) attack x batch pairs between the reference attacks and jaxleak's twins."""
  agree = total = 0
  for idx in batches:
    x = R.minmax(torch.from_numpy(np.array(clients.windows[idx], np.float32)).unsqueeze(1))
    gw, gb = R.full_gradient(model, x, torch.from_numpy(np.array(clients.labels[idx], np.int64)))
    for name in R.ATTACKS:
      if name == "llg_star":
        m, s = R.llg_star_estimates(model, n, input_shape, gw.shape[0])
        ref = R.llg_star(gw, gb, n, m, s)
        ours = twin_counts(name, gw, gb, n, A.LLGStarParams(impact=jnp.float32(m), offsets=jnp.asarray(s.numpy())))
        ok = np.array_equal(ref, ours)
      elif name == "ilrg":
        before = R.ilrg(gw, gb, n, return_unpadded=True)
        ours = twin_counts(name, gw, gb, n)
        ok = ours.sum() == n and np.all(ours >= before) and (before.sum() < n or np.array_equal(ours, before))
      else:
        ok = np.array_equal(getattr(R, name)(gw, gb, n), twin_counts(name, gw, gb, n))
      agree += bool(ok)
      total += 1
  return agree, total


def main(_):
  n = 100
  with tempfile.TemporaryDirectory() as cache:
    cold = run_jaxleak(cache)
    warm = run_jaxleak(cache)

  ds = D.load(FLAGS.dataset, scale=FLAGS.synthetic_scale, seed=1)
  clients = D.make_clients(ds)
  idx, _ = D.sample_clients("shuffle", jax.random.key(0), clients, n)
  num_batches = int(idx.shape[0])
  flax_model = models.build("deepconvlstm", ds.num_classes)
  v = models.init(flax_model, jax.random.key(1), 50, ds.num_channels)
  model = R.load_flax_params(R.DeepConvLSTM(ds.num_channels, ds.num_classes), v["params"])
  torch.manual_seed(1)
  sample = np.linspace(0, num_batches - 1, FLAGS.reference_batches).round().astype(int)
  ways = (False, True) if FLAGS.reconstruction_step else (False,)
  for rec in ways:                                                                              # warm-up
    R.reference_batch(model, clients.windows[idx[sample[0]]], clients.labels[idx[sample[0]]], rec)
  seconds = dict.fromkeys(ways, 0.0)
  for b in sample:                                  # alternating, so both ways see the same machine
    for rec in ways:
      t0 = time.perf_counter()
      R.reference_batch(model, clients.windows[idx[b]], clients.labels[idx[b]], rec)
      seconds[rec] += time.perf_counter() - t0
  per_batch = seconds[False] / len(sample)
  reference = per_batch * num_batches
  agree, total = check_counts(model, idx[sample], clients, n, (50, ds.num_channels))

  print(f"{FLAGS.dataset} (scale {FLAGS.synthetic_scale:g}): {clients.num_clients} clients, {num_batches} batches "
        f"of N={n}, DeepConvLSTM, C={ds.num_classes}, {ds.num_channels} channels; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), jax {jax.__version__}")
  print(f"jaxleak main job, whole process: {cold:.1f} s (empty compilation cache), {warm:.1f} s (cache filled)")
  print(f"reference way (PyTorch, eager): {per_batch:.3f} s per batch x {num_batches} = {reference:.0f} s "
        f"({reference / 60:.1f} min), from {len(sample)} timed batches")
  print(f"ratio: {reference / cold:.1f}x (first run), {reference / warm:.1f}x (later runs)")
  if FLAGS.reconstruction_step:
    full = seconds[True] / len(sample) * num_batches
    print(f"reference way with its discarded reconstruction step: {seconds[True] / len(sample):.3f} s per batch x "
          f"{num_batches} = {full:.0f} s ({full / 60:.1f} min); ratio: {full / cold:.1f}x (first run), "
          f"{full / warm:.1f}x (later runs)")
  print(f"counts equal to jaxleak's twins of the reference attacks: {agree}/{total} (attack x batch)")
  if agree != total:
    raise SystemExit("the reference attacks and jaxleak's twins disagree: see tests/test_reference_way.py")


if __name__ == "__main__":
  _flags.run(main)
