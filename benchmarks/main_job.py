"""Wall time of the README's main job, next to the reference's way of doing the same work, in one run.

  python benchmarks/main_job.py [--reference_batches 4]

1. Runs `experiments/single_step_leakage.py` with default flags (all 30 HAPT clients, DeepConvLSTM, shuffle,
   five attacks) as a subprocess: wall time including Python start-up, data loading and compilation.
2. Times the reference's per-batch procedure on a few HAPT batches with the same model: for every attack, a fresh
   full-model gradient of the batch (jitted JAX, so faster than the reference's eager PyTorch), then the attack on
   that one gradient; extrapolates to all batches x attacks. The ratio is the figure to quote.
"""
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

import jaxleak.attacks as A
from jaxleak import data as D
from jaxleak import models
from jaxleak.federated import minmax_scale
from jaxleak.types import LastLayerGrads

FLAGS = flags.FLAGS
flags.DEFINE_integer("reference_batches", 4, "batches timed for the reference-style procedure")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(_):
  with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "single_step_leakage.py"),
                           f"--output_dir={out}"], capture_output=True, text=True)
    ours = time.perf_counter() - t0
  if proc.returncode != 0:
    raise SystemExit(proc.stderr[-3000:])
  print(proc.stdout)
  table_batches = 433

  ds = D.load_hapt()
  clients = D.make_clients(ds)
  idx, _ = D.sample_clients("shuffle", jax.random.key(0), clients, 100)
  model = models.build("deepconvlstm", ds.num_classes)
  v = models.init(model, jax.random.key(1), 50, ds.num_channels)

  @jax.jit
  def full_grad(params, x, y, key):
    def loss(p):
      logits = model.apply({"params": p}, minmax_scale(x), train=True, rngs={"dropout": key})
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    return jax.grad(loss)(params)

  head = models.head_params(v["params"])
  star = A.LLGStarParams(impact=jnp.float32(-0.01), offsets=jnp.zeros(ds.num_classes))
  attack_fns = {n: jax.jit(lambda g, k, n=n: A.run(n, g, 100, A.AttackContext(key=k, star_params=star, head=head)))
                for n in A.HAR_PAPER_ATTACKS}
  x0, y0 = clients.windows[idx[0]], clients.labels[idx[0]]
  g = full_grad(v["params"], x0, y0, jax.random.key(0))                     # compile outside the timing
  for f in attack_fns.values():
    f(LastLayerGrads(g["head"]["kernel"], g["head"]["bias"]), jax.random.key(0))
  t0 = time.perf_counter()
  for b in range(FLAGS.reference_batches):
    x, y = clients.windows[idx[b]], clients.labels[idx[b]]
    for name, f in attack_fns.items():
      g = full_grad(v["params"], x, y, jax.random.key(b))
      jax.block_until_ready(f(LastLayerGrads(g["head"]["kernel"], g["head"]["bias"]), jax.random.key(b)))
  per_batch = (time.perf_counter() - t0) / FLAGS.reference_batches
  reference = per_batch * table_batches
  print(f"main job (subprocess, everything included): {ours:.1f} s")
  print(f"reference-style (full gradient per batch per attack, jitted, LLG* dummies not counted): "
        f"{per_batch:.2f} s per batch -> {reference:.0f} s for {table_batches} batches; ratio {reference / ours:.1f}x")


if __name__ == "__main__":
  app.run(main)
