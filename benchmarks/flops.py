"""FLOPs per window of each model and path, this machine's matmul peak, and the fraction of it each path reaches.

  python benchmarks/flops.py [--num_batches 16] [--channels 6] [--classes 13] [--models deepconvlstm,tinyhar]

In one run:
1. The f32 matmul peak: the best of 2048^3 and 1024^3 matmuls (jit, warm), in GFLOP/s.
2. Per model, FLOPs per window counted on the jaxpr (`jaxleak.flops.count_flops`, loop trip counts included)
   next to XLA's cost analysis (which counts the LSTM's time loop once, so it under-counts DeepConvLSTM).
3. Per path, windows/s and achieved GFLOP/s as a fraction of the peak:
     fast            forward pass + closed-form head gradient: the single-step gradient stage (the main job)
     model_norms     full backward for the whole-model clip norm (LDP with clip scope 'all', the LDP sweep's pass)
     per_example     per-example whole-model gradients (DP-SGD-style clipping; --per_example_batches batches)
     multi_step      S=5 local SGD steps of B=20 windows on N=100 (the paper's first multi-step setting)
     trained_folds   the fast path with a different model per batch (trained LOSO folds: batched variables)
4. Per model, the HAR paper's five attacks' own FLOPs on one update of N = 100 (counted on the jaxpr; a `while`
   loop's body once, so marked as a lower bound), as a share of the update's forward FLOPs: why the study's FLOP
   floor (`--dry_run`) counts model passes only.
Absolute rates are this machine's; the fractions are what to compare between machines.
"""
import time

import jax
import jax.numpy as jnp
from absl import app, flags

import jaxleak.attacks as A
from jaxleak import LastLayerGrads, flops, models
from jaxleak.flops import matmul_peak
from jaxleak.federated import LocalSteps, client_updates, head_grads_and_model_norms, last_layer_grads
from jaxleak.privacy import LdpConfig
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_batches", 16, "batches of 100 windows per timed call", lower_bound=1)
flags.DEFINE_integer("per_example_batches", 2, "batches for the (slow) per-example path", lower_bound=1)
flags.DEFINE_integer("channels", 6, "sensor channels (HAPT: 6; WEAR: 12)", lower_bound=1)
flags.DEFINE_integer("classes", 13, "classes (HAPT: 13; WEAR: 19)", lower_bound=2)
flags.DEFINE_list("models", ["deepconvlstm", "tinyhar"], "models to measure")


def best_time(f, *args, repeats: int = 3) -> float:
  jax.block_until_ready(f(*args))
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    ts.append(time.perf_counter() - t0)
  return min(ts)


def paths(model, v, x, y, keys, per_example_batches):
  """name -> (jitted function, its arguments, windows per call)."""
  k, n = y.shape
  fast = jax.jit(lambda v, x, y, kk: last_layer_grads(model, v, x, y, kk, method="fast", chunk_size=8))
  norms = jax.jit(lambda v, x, y, kk: head_grads_and_model_norms(model, v, x, y, kk))
  pe = LdpConfig(clip_norm=1.0, noise_std=0.0, clip_scope="all", clip_granularity="per_example")
  # One plain vmap over the batches, as the pipeline computes them (one update a call is the same rate): a lax.map
  # around a full backward pass (chunk_size < K) runs 5-14x slower on XLA:CPU (BUILD_NOTES.md).
  per_example = jax.jit(lambda v, x, y, kk: last_layer_grads(model, v, x, y, kk, chunk_size=x.shape[0], ldp=pe))
  local = LocalSteps(steps=5, batch_size=20, lr=1e-4)
  multi = jax.jit(lambda v, x, y, kk: client_updates(model, v, x, y, kk, local=local))
  stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (k,) + a.shape), v)        # one model per batch
  folds = jax.jit(lambda v, x, y, kk: last_layer_grads(model, v, x, y, kk, chunk_size=8, batched_variables=True))
  pk = per_example_batches
  return {"fast": (fast, (v, x, y, keys), k * n),
          "model_norms": (norms, (v, x, y, keys), k * n),
          "per_example": (per_example, (v, x[:pk], y[:pk], keys[:pk]), pk * n),
          "multi_step": (multi, (v, x, y, keys), k * n),
          "trained_folds": (folds, (stacked, x, y, keys), k * n)}


def main(_):
  try:
    for name in FLAGS.models:
      models.spec(name)
  except ValueError as e:
    raise app.UsageError(f"--models: {e}") from None
  k, ch, c = FLAGS.num_batches, FLAGS.channels, FLAGS.classes
  x = jax.random.normal(jax.random.key(0), (k, 100, 50, ch))
  y = jax.random.randint(jax.random.key(1), (k, 100), 0, c)
  keys = jax.random.split(jax.random.key(2), k)
  peak = matmul_peak()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {k} batches x 100 windows x 50 x {ch}, C={c}")
  print(f"f32 matmul peak: {peak:.0f} GFLOP/s\n")
  print(f"{'model':13s} {'path':14s} {'MFLOP/window':>12s} {'(XLA)':>8s} {'windows/s':>10s} {'GFLOP/s':>8s} "
        f"{'of peak':>8s}")
  for name in FLAGS.models:
    model = models.build(name, c)
    v = models.init(model, jax.random.key(3), 50, ch)
    fwd = lambda v, xb: model.apply(v, xb)
    ours = flops.count_flops(fwd, v, x[0]).total / 100
    xla = flops.xla_flops(fwd, v, x[0]) / 100
    print(f"{name:13s} {'forward':14s} {ours / 1e6:12.1f} {xla / 1e6:8.1f}")
    for path, (f, args, windows) in paths(model, v, x, y, keys, FLAGS.per_example_batches).items():
      count = flops.count_flops(f, *args)
      t = best_time(f, *args, repeats=2 if path == "per_example" else 3)
      rate = count.total / t / 1e9
      print(f"{name:13s} {path:14s} {count.total / windows / 1e6:12.1f} {'':8s} {windows / t:10,.0f} "
            f"{rate:8.1f} {rate / peak:8.0%}" + ("" if count.exact else "  (lower bound: a while loop)"))
  print("\nMFLOP/window: ours counts loop bodies x trip count; XLA's cost analysis counts a loop body once.")
  print(f"\n{'model':13s} {'attack':9s} {'kFLOP/update':>13s} {'of its forward':>15s}  (one update of N = 100)")
  for name in FLAGS.models:
    model = models.build(name, c)
    v = models.init(model, jax.random.key(3), 50, ch)
    forward = flops.count_flops(lambda v, xb: model.apply(v, xb), v, x[0]).total
    head = models.head_params(v["params"])
    grads = LastLayerGrads(kernel=jnp.zeros_like(head.kernel), bias=jnp.zeros_like(head.bias))
    star = A.LLGStarParams(impact=jnp.float32(-0.01), offsets=jnp.zeros(c))
    ctx = A.AttackContext(key=jax.random.key(4), head=head, star_params=star)
    for attack in A.HAR_PAPER_ATTACKS:
      count = flops.count_flops(lambda g: A.run(attack, g, 100, ctx), grads)
      print(f"{name:13s} {attack:9s} {('>= ' if not count.exact else '') + f'{count.total / 1e3:,.1f}':>13s} "
            f"{count.total / forward:15.1e}")


if __name__ == "__main__":
  _flags.run(main)
