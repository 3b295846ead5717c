"""The study engine, measured: LDP settings swept in one compilation, memory at two sizes, a whole grid's wall time.

  python benchmarks/study.py sweep [--dataset=hapt --model=deepconvlstm]      # 10 vs 1,000 (sigma, tau) settings
  python benchmarks/study.py rss                                            # peak RSS: 2 vs 8 clients, 10 vs 200
  python benchmarks/study.py grid --set datasets=synthetic_wear,synthetic_wetlab --set states=untrained

sweep: one group's shared gradient pass once, then the attack sweep over 10 and over 1,000 settings, each timed
after a warm-up call of the same compiled function (side by side, one process); prints both and the ratio.
rss: the same study at two sizes in fresh subprocesses (ru_maxrss), to show memory does not grow with them.
grid: runs `har_paper` (with the --set overrides) into a temporary study folder and prints the wall time by group.
"""
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "hapt", "dataset of the sweep group")
flags.DEFINE_string("model", "deepconvlstm", "model of the sweep group")
flags.DEFINE_integer("num_clients", None, "clients of the sweep group (default all)")
flags.DEFINE_multi_string("set", [], "study overrides for `grid` (field=value)")


def sweep():
  from jaxleak.runs.leakage import LeakageConfig
  from jaxleak.runs.leakage.prepare import prepare
  from jaxleak.runs.leakage.scoring import attack_inputs
  from jaxleak.runs.leakage.updates import compute_heads_and_norms
  from jaxleak.runs.study import engine
  cfg = LeakageConfig(dataset=FLAGS.dataset, model=FLAGS.model, num_clients=FLAGS.num_clients)
  t0 = time.perf_counter()
  prep = prepare(cfg, None, None, None)
  grads, norms = compute_heads_and_norms(prep, cfg, None)
  keys, star, head = attack_inputs(prep, cfg)
  noise_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(prep.dropout_keys)
  shared = time.perf_counter() - t0
  rng = np.random.default_rng(0)

  def timed(n):
    settings = [(float(s), float(t)) for s, t in zip(rng.choice([0.0, 0.01, 0.1], n), rng.uniform(0, 2, n))]
    t = time.perf_counter()
    out = engine.sweep_settings(grads, jnp.asarray(norms), noise_keys, keys, star, head, settings,
                                names=cfg.attacks, num_samples=cfg.num_samples, scope="all")
    return time.perf_counter() - t, out

  timed(engine.SETTINGS_PER_CALL)                                   # compile once, outside the timings
  t10, _ = timed(10)
  t1000, _ = timed(1000)
  k = len(prep.indices)
  print(f"{FLAGS.dataset} {FLAGS.model}: {k} updates; shared gradient pass (+ data, compile) {shared:.1f} s")
  print(f"sweep of 10 settings: {t10:.2f} s; of 1,000: {t1000:.2f} s; ratio {t1000 / t10:.1f}x "
        f"({t1000 / 1000 * 1e3:.1f} ms per setting = {t1000 / 1000 / k * 1e6:.1f} us per update x 5 attacks)")
  print(f"compilations of the sweep function: {engine.sweep_chunk._cache_size()}")


def _rss_child(args):
  code = ("import resource, sys; from jaxleak.runs import study as S; "
          "plan = S.make_plan(S.override(S.preset('har_ldp'), dict(a.split('=', 1) for a in sys.argv[2:]))); "
          "S.run_plan(plan, S.Store(sys.argv[1]), progress=None); "
          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
  with tempfile.TemporaryDirectory() as d:
    out = subprocess.run([sys.executable, "-c", code, d, *args], capture_output=True, text=True, check=True)
  return int(out.stdout.strip().splitlines()[-1]) / 1024


def rss():
  base = ["datasets=synthetic_wear", "models=tinyhar", "states=untrained", "samplings=shuffle", "synthetic_scale=0.2"]
  many = ",".join(f"0.0{i % 10}:{0.1 + i / 100:.2f}" for i in range(200))
  for label, extra in (("2 clients, 10 settings", ["num_clients=2", "ldp=" + ",".join(f"0.0{i}:0.5" for i in range(10))]),
                       ("8 clients, 10 settings", ["num_clients=8", "ldp=" + ",".join(f"0.0{i}:0.5" for i in range(10))]),
                       ("2 clients, 200 settings", ["num_clients=2", "ldp=" + many])):
    print(f"{label}: peak RSS {_rss_child(base + extra):.0f} MiB")


def grid():
  from jaxleak.runs import study as S
  values = dict(item.split("=", 1) for item in FLAGS.set)
  plan = S.make_plan(S.override(S.preset("har_paper"), values))
  with tempfile.TemporaryDirectory() as d:
    summary = S.run_plan(plan, S.Store(d), progress=print)
  print(f"\nwhole grid: {len(plan.tasks)} tasks in {len(plan.groups)} groups, {summary.wall_s:.0f} s wall")
  for label, secs in sorted(summary.per_group_s, key=lambda x: -x[1])[:10]:
    print(f"  {secs:7.1f} s  {label}")


def main(argv):
  {"sweep": sweep, "rss": rss, "grid": grid}[argv[1] if len(argv) > 1 else "sweep"]()


if __name__ == "__main__":
  app.run(main)
