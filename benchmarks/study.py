"""The study engine, measured: LDP settings swept in one compilation, memory at two sizes, a whole grid's wall time.

  python benchmarks/study.py sweep [--dataset=hapt --model=deepconvlstm]      # 10 vs 1,000 (sigma, tau) settings
  python benchmarks/study.py rss                                            # peak RSS: 2 vs 8 clients, 10 vs 200
  python benchmarks/study.py sweep_memory [--updates=10000]                 # the sweep's peak RSS as K grows
  python benchmarks/study.py grid --set datasets=synthetic_wear,synthetic_wetlab --set states=untrained

sweep: one group's shared gradient pass once, then the attack sweep over 10 and over 1,000 settings, each timed
after a warm-up call of the same compiled function (side by side, one process); prints both and the ratio.
rss: the same study at two sizes in fresh subprocesses (ru_maxrss), to show memory does not grow with them.
sweep_memory: the attack sweep alone (16 settings, the HAR paper's five attacks, C = 19, D = 128 as WEAR-shaped
DeepConvLSTM updates, random gradients) over K updates, in fresh subprocesses: peak RSS and time with the updates
in one call and in calls of `engine.UPDATES_PER_CALL`.
grid: runs `--preset` (default har_paper, with the --set overrides) into a temporary study folder and prints the wall
time by group next to its FLOP floor (`cost.estimate_flops`: estimated window passes x forward FLOPs per window,
over this machine's matmul peak, measured in the same run; `study run --dry_run` prints the same floor), and how
many programs XLA compiled during the grid (and in how many seconds) or loaded from the persistent cache.
"""
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "hapt", "dataset of the sweep group")
flags.DEFINE_string("model", "deepconvlstm", "model of the sweep group")
flags.DEFINE_integer("num_clients", None, "clients of the sweep group (default all)", lower_bound=1)
flags.DEFINE_multi_string("set", [], "study overrides for `grid` (field=value)")
flags.DEFINE_string("preset", "har_paper", "the study `grid` runs")
flags.DEFINE_integer("updates", 10000, "K of `sweep_memory` (its largest size; also K / 10)", lower_bound=10)


def sweep():
  from jaxleak.runs.leakage import LeakageConfig
  from jaxleak.runs.leakage.prepare import noise_keys as prepare_noise_keys, prepare
  from jaxleak.runs.leakage.scoring import attack_inputs
  from jaxleak.runs.leakage.updates import call_size, compute_heads_and_norms
  from jaxleak.runs.study import engine
  cfg = LeakageConfig(dataset=FLAGS.dataset, model=FLAGS.model, num_clients=FLAGS.num_clients)
  t0 = time.perf_counter()
  prep = prepare(cfg, None, None, None)
  grads, norms = compute_heads_and_norms(prep, cfg, None)
  keys, star, head = attack_inputs(prep, cfg)
  noise_keys = prepare_noise_keys(prep.dropout_keys)
  shared = time.perf_counter() - t0
  rng = np.random.default_rng(0)

  def timed(n, per_call=None):
    settings = [(float(s), float(t)) for s, t in zip(rng.choice([0.0, 0.01, 0.1], n), rng.uniform(0, 2, n))]
    t = time.perf_counter()
    out = engine.sweep_settings(grads, jnp.asarray(norms), noise_keys, keys, star, head, settings,
                                names=cfg.attacks, num_samples=cfg.num_samples, scope="all", per_call=per_call)
    return time.perf_counter() - t, out

  k = len(prep.indices)
  per_update = call_size(k, engine.UPDATES_PER_CALL)
  sizes = {n: engine.default_settings_per_call(grads, n, per_update) for n in (10, 1000)}
  for n in sorted(set(sizes.values())):                            # compile each call size outside the timings
    timed(n)
  t10, _ = timed(10)
  t1000, _ = timed(1000)
  print(f"{FLAGS.dataset} {FLAGS.model}: {k} updates; shared gradient pass (+ data, compile) {shared:.1f} s")
  print(f"sweep of 10 settings: {t10:.2f} s ({sizes[10]} settings a call); of 1,000: {t1000:.2f} s ({sizes[1000]} "
        f"a call); ratio {t1000 / t10:.1f}x ({t1000 / 1000 * 1e3:.1f} ms per setting = "
        f"{t1000 / 1000 / k * 1e6:.1f} us per update x 5 attacks)")
  if sizes[1000] != engine.SETTINGS_PER_CALL:                     # accelerators: against the CPU's fixed calls
    timed(1000, engine.SETTINGS_PER_CALL)
    t16, _ = timed(1000, engine.SETTINGS_PER_CALL)
    print(f"the same 1,000 settings in calls of {engine.SETTINGS_PER_CALL}: {t16:.2f} s ({t16 / t10:.1f}x of 10)")
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
  ten = "ldp=" + ",".join(f"0.0{i}:0.5" for i in range(10))
  for label, extra in (("2 clients, 10 settings", ["num_clients=2", ten]),
                       ("8 clients, 10 settings", ["num_clients=8", ten]),
                       ("2 clients, 200 settings", ["num_clients=2", "ldp=" + many])):
    print(f"{label}: peak RSS {_rss_child(base + extra):.0f} MiB")


def _sweep_memory_child(k: int, updates_per_call: int) -> str:
  code = ("import resource, sys, time, jax, jax.numpy as jnp\n"
          "from jaxleak import LastLayerGrads, LastLayerParams, attacks as A\n"
          "from jaxleak.runs.study import engine\n"
          "k, u = int(sys.argv[1]), int(sys.argv[2]); d, c = 128, 19\n"
          "r = lambda i, shape: 0.05 * jax.random.normal(jax.random.key(i), shape)\n"
          "grads = LastLayerGrads(kernel=r(0, (k, d, c)), bias=r(1, (k, c)))\n"
          "head = LastLayerParams(kernel=r(2, (k, d, c)), bias=r(3, (k, c)))\n"
          "star = {m: A.LLGStarParams(impact=jnp.full((k,), -0.01), offsets=jnp.zeros((k, c))) "
          "for m in ('wainakh', 'whole_matrix', 'har')}\n"
          "keys = jax.random.split(jax.random.key(4), k)\n"
          "settings = [(0.01 * (i % 4), 0.5 * (i % 3)) for i in range(16)]\n"
          "t = time.perf_counter()\n"
          "engine.sweep_settings(grads, jnp.ones(k), keys, keys, star, head, settings, names=A.HAR_PAPER_ATTACKS, "
          "num_samples=100, scope='all', updates_per_call=u)\n"
          "print(f'{time.perf_counter() - t:.1f} s, peak RSS '"
          "f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')\n")
  out = subprocess.run([sys.executable, "-c", code, str(k), str(updates_per_call)], capture_output=True, text=True)
  if out.returncode:
    raise SystemExit(out.stderr[-2000:])
  return out.stdout.strip().splitlines()[-1]


def sweep_memory():
  from jaxleak.runs.study import engine
  for k in (FLAGS.updates // 10, FLAGS.updates):
    for u, label in ((k, "one call"), (engine.UPDATES_PER_CALL, f"calls of <= {engine.UPDATES_PER_CALL}")):
      print(f"K = {k:6d}, 16 settings, updates in {label:16s}: {_sweep_memory_child(k, u)}", flush=True)


def _counting_compilations() -> dict:
  """{'compiled': XLA compilations, 'compile_s': their seconds, 'cache_hits': programs loaded from the persistent
  cache instead}, counted from now on in this process (jax.monitoring's events)."""
  counts = {"compiled": 0, "compile_s": 0.0, "cache_hits": 0}

  def on_duration(event, secs, **_):
    if event == "/jax/core/compile/backend_compile_duration":
      counts["compiled"] += 1
      counts["compile_s"] += secs

  def on_event(event, **_):
    if event == "/jax/compilation_cache/cache_hits":
      counts["cache_hits"] += 1
  jax.monitoring.register_event_duration_secs_listener(on_duration)
  jax.monitoring.register_event_listener(on_event)
  return counts


def grid():
  from jaxleak.flops import matmul_peak
  from jaxleak.runs import study as S
  from jaxleak.runs.study.cost import estimate_flops
  values = dict(item.split("=", 1) for item in FLAGS.set)
  plan = S.make_plan(S.override(S.preset(FLAGS.preset), values))
  before = matmul_peak() * 1e9
  floor = estimate_flops(plan)
  compilations = _counting_compilations()
  with tempfile.TemporaryDirectory() as d:
    summary = S.run_plan(plan, S.Store(d), progress=print)
  compilations = dict(compilations)
  # The peak drifts between sittings (169-207 GFLOP/s on this 2-core CPU) and within one: measured before and after
  # the grid, the floor uses the higher reading, so a slow moment at the start cannot flatter the ratio.
  after = matmul_peak() * 1e9
  peak = max(before, after)
  total_floor = sum(floor.values()) / peak
  print(f"\nwhole grid: {len(plan.tasks)} tasks in {len(plan.groups)} groups, {summary.wall_s:.0f} s wall; "
        f"FLOP floor {total_floor:.0f} s ({sum(floor.values()) / 1e12:.1f} TFLOP at the matmul peak {peak / 1e9:.0f} "
        f"GFLOP/s, the higher of {before / 1e9:.0f} before and {after / 1e9:.0f} after the grid): wall / floor = "
        f"{summary.wall_s / total_floor:.2f}")
  print(f"XLA compilations during the grid: {compilations['compiled']} ({compilations['compile_s']:.1f} s); "
        f"programs loaded from the persistent cache: {compilations['cache_hits']}")
  rows = [(secs, floor.get(g.key, float("nan")) / peak, label)
          for g, (label, secs) in zip(plan.groups, summary.per_group_s)]
  by_kind = {}
  for secs, fl, label in rows:
    kind = "multi-step" if "N:B:S" in label else ("LDP sweep" if "LDP settings" in label else "single")
    model = label.split()[1]
    w, f = by_kind.get((kind, model), (0.0, 0.0))
    by_kind[(kind, model)] = (w + secs, f + fl)
  print(f"{'groups':28s} {'wall s':>8s} {'floor s':>8s} {'wall/floor':>10s}")
  for (kind, model), (w, f) in sorted(by_kind.items()):
    print(f"{kind + ' ' + model:28s} {w:8.1f} {f:8.1f} {w / f:10.2f}")
  print("slowest groups:")
  for secs, fl, label in sorted(rows, key=lambda r: -r[0])[:10]:
    print(f"  {secs:7.1f} s (floor {fl:5.1f} s)  {label}")


def main(argv):
  modes = {"sweep": sweep, "rss": rss, "grid": grid, "sweep_memory": sweep_memory}
  mode = argv[1] if len(argv) > 1 else "sweep"
  if mode not in modes or len(argv) > 2:
    raise app.UsageError(f"benchmarks/study.py: unknown mode {' '.join(argv[1:])!r}; give one of {', '.join(modes)}.")
  modes[mode]()


if __name__ == "__main__":
  _flags.run(main)
