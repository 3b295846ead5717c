"""Where a gradient path's time goes, op by op: a profiler trace of XLA's compiled program, summed per instruction.

  python benchmarks/op_profile.py [--model=deepconvlstm] [--path=fast] [--num_batches=16] [--top=25]

Paths are those of `benchmarks/flops.py` (fast, model_norms, per_example, multi_step, trained_folds), on random
HAPT-shaped batches of 100 windows (`--channels`, `--classes` for other shapes). The script turns on XLA:CPU's
per-instruction trace events (`--xla_cpu_enable_xprof_traceme`), runs the compiled path `--repeats` times under
`jax.profiler`, and sums the trace's instruction events by name. Each instruction is matched with the optimised
HLO (`lower().compile().as_text()`) for its kind and the model op it comes from (`op_name` metadata). Printed:
the wall time per call, the time per category (matmul, convolution, element-wise, layout copies, loop control)
and the top instructions. Time no instruction event covers (XLA:CPU traces some convolutions on no thread we
see) is shown as "not attributed"; instructions that overlap on two threads can make it negative.
Accelerators: the trace names GPU kernels, not HLO instructions; this script reads XLA:CPU traces only.
"""
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax                                                    # noqa: E402  (XLA_FLAGS must be set first)
from absl import app, flags                                  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flops import paths                                      # noqa: E402  benchmarks/flops.py, and its flags:
                                                              # --num_batches, --channels, --classes
from jaxleak import models                                   # noqa: E402
import _flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "deepconvlstm", "model to profile")
flags.DEFINE_enum("path", "fast", ["fast", "model_norms", "per_example", "multi_step", "trained_folds"],
                  "gradient path (see benchmarks/flops.py)")
flags.DEFINE_integer("repeats", 3, "profiled calls (after two warm-up calls)", lower_bound=1)
flags.DEFINE_integer("top", 25, "instructions listed", lower_bound=1)

_HLO_LINE = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) (\w[\w\-]*)\((.*)$")
_WRAPPERS = ("ThunkExecutor", "Await", "Pjit", "$", "ExecuteHelper", "PjRt", "Execute")


def hlo_instructions(hlo_text: str) -> dict:
  """instruction name -> (HLO opcode, fusion kind or '', shape, source op_name) of an optimised HLO module."""
  out = {}
  for line in hlo_text.splitlines():
    m = _HLO_LINE.match(line)
    if not m:
      continue
    name, shape, opcode, rest = m.groups()
    kind = re.search(r"kind=(\w+)", rest)
    src = re.search(r'op_name="([^"]*)"', rest)
    out[name] = (opcode, kind.group(1) if kind else "", shape, src.group(1) if src else "")
  return out


def category(name: str, info) -> str:
  opcode = info[0] if info else ""
  if name.startswith(("ynn_fusion", "xnn_fusion", "onednn")) and info and "dot_general" in info[3] or opcode == "dot":
    return "matmul"
  if opcode == "convolution":
    return "convolution"
  if opcode == "while" or name.startswith(("while", "wrapped_compare", "wrapped_add")):
    return "loop control"
  if "transpose" in name or opcode in ("copy", "transpose") or name.startswith(("copy", "wrapped_copy")):
    return "layout (transpose, copy)"
  if name.startswith(("ynn_fusion", "xnn_fusion")):
    return "library reduction"
  return "element-wise"


def leaf_events(trace_dir: str) -> list:
  path = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "perfetto_trace.json.gz"))
  if not path:
    raise SystemExit(f"op_profile: jax.profiler wrote no perfetto trace under {trace_dir}.")
  data = json.load(gzip.open(path[0]))
  events = data["traceEvents"] if isinstance(data, dict) else data
  return [e for e in events if e.get("ph") == "X" and not e["name"].startswith(_WRAPPERS)]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if jax.devices()[0].platform != "cpu":
    raise app.UsageError("op_profile reads XLA:CPU traces; run it with JAX_PLATFORMS=cpu.")
  try:
    models.spec(FLAGS.model)
  except ValueError as e:
    raise app.UsageError(f"--model: {e}") from None
  if FLAGS.num_batches < 1 or FLAGS.channels < 1 or FLAGS.classes < 2:
    raise app.UsageError("--num_batches and --channels must be >= 1, --classes >= 2.")
  k, ch, c = FLAGS.num_batches, FLAGS.channels, FLAGS.classes
  x = jax.random.normal(jax.random.key(0), (k, 100, 50, ch))
  y = jax.random.randint(jax.random.key(1), (k, 100), 0, c)
  keys = jax.random.split(jax.random.key(2), k)
  model = models.build(FLAGS.model, c)
  v = models.init(model, jax.random.key(3), 50, ch)
  f, args, windows = paths(model, v, x, y, keys, per_example_batches=min(k, 2))[FLAGS.path]
  hlo = hlo_instructions(f.lower(*args).compile().as_text())
  jax.block_until_ready(f(*args))
  jax.block_until_ready(f(*args))
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d, create_perfetto_trace=True)
    t0 = time.perf_counter()
    for _ in range(FLAGS.repeats):
      jax.block_until_ready(f(*args))
    wall = (time.perf_counter() - t0) / FLAGS.repeats
    jax.profiler.stop_trace()
    events = leaf_events(d)

  per_name, calls = collections.defaultdict(float), collections.Counter()
  for e in events:
    if e["name"] in hlo:
      per_name[e["name"]] += e.get("dur", 0) / 1e3 / FLAGS.repeats          # ms per call
      calls[e["name"]] += 1
  if not per_name:
    raise SystemExit("op_profile: the trace holds no XLA instruction events (this jaxlib may not emit them).")
  traced = sum(per_name.values())
  by_cat = collections.defaultdict(float)
  for name, ms in per_name.items():
    by_cat[category(name, hlo.get(name))] += ms
  by_cat["not attributed"] = wall * 1e3 - traced
  print(f"{FLAGS.model} {FLAGS.path}: {k} batches of 100 windows; {wall * 1e3:.1f} ms per call "
        f"({windows / wall:,.0f} windows/s), jax {jax.__version__}, {jax.device_count()} CPU device(s)")
  print(f"\n{'category':28s} {'ms/call':>8s} {'share':>6s}")
  for cat, ms in sorted(by_cat.items(), key=lambda kv: -kv[1]):
    print(f"{cat:28s} {ms:8.1f} {ms / (wall * 1e3):6.0%}")
  print(f"\n{'instruction':34s} {'ms/call':>8s} {'share':>6s} {'runs':>5s}  shape / from")
  for name, ms in sorted(per_name.items(), key=lambda kv: -kv[1])[:FLAGS.top]:
    opcode, kind, shape, src = hlo[name]
    src = "/".join(src.split("/")[-2:]) if src else opcode + (f" {kind}" if kind else "")
    print(f"{name:34s} {ms:8.2f} {ms / (wall * 1e3):6.1%} {calls[name] // FLAGS.repeats:5d}  {shape[:30]} {src}")


if __name__ == "__main__":
  _flags.run(main)
