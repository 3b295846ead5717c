import os

# Tests run on CPU with 4 fake devices so sharded code paths are exercised without accelerators.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA:CPU's backend at -O0 (LLVM's optimisation of XLA's generated loops; XLA's own HLO passes and the Eigen/oneDNN
# matmul and convolution kernels are unchanged) and its older loop-fusion emitters (LLVM IR straight from XLA's
# elemental emitter, not through the MLIR fusion emitters): the suite is mostly compilation of small programs, which
# the first makes ~3x faster and the second another ~40 % (suite 14 min 57 s -> 9 min 23 s, 2026-12-06).
# JAXLEAK_TESTS_FULL_OPT=1 runs it as users run (BUILD_NOTES "Test suite": the same results either way).
_FULL_OPT = os.environ.get("JAXLEAK_TESTS_FULL_OPT", "")
if _FULL_OPT not in ("", "0", "1"):
  raise SystemExit(f"JAXLEAK_TESTS_FULL_OPT={_FULL_OPT!r}: use 1 (XLA's full optimisation) or 0 / unset (-O0, the "
                   "default for tests).")


def _xla_knows(flag: str) -> bool:
  """Whether this jaxlib's XLA takes `flag` (XLA aborts the process on a flag it does not know, and pyproject.toml
  allows any jax >= 0.7): probed once per jaxlib version in a subprocess, the answer kept in the temp folder."""
  import importlib.metadata
  import subprocess
  import sys
  import tempfile
  memo = os.path.join(tempfile.gettempdir(), f"jaxleak-tests-xla-{importlib.metadata.version('jaxlib')}-"
                                             f"{flag.lstrip('-').split('=')[0]}")
  if os.path.exists(memo):
    with open(memo) as f:
      return f.read() == "1"
  probe = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"],
                         env={**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}, capture_output=True)
  with open(memo + f".{os.getpid()}", "w") as f:
    f.write("1" if probe.returncode == 0 else "0")
  os.replace(memo + f".{os.getpid()}", memo)
  return probe.returncode == 0


if "XLA_FLAGS" not in os.environ:
  _OPT = ""
  if _FULL_OPT != "1":
    _OPT = " --xla_backend_optimization_level=0"
    if _xla_knows("--xla_cpu_use_fusion_emitters=false"):
      _OPT += " --xla_cpu_use_fusion_emitters=false"
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4" + _OPT
# Commands the tests start as subprocesses keep their compilation cache out of the user's home.
import tempfile  # noqa: E402

os.environ.setdefault("JAXLEAK_COMPILATION_CACHE", os.path.join(tempfile.gettempdir(), "jaxleak-tests-cache"))

# CI runs a fixed set of hypothesis examples (no flakes); local runs keep exploring new ones.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
  settings.load_profile("ci")


# The longest test files start first, so that the two workers of `-n 2 --dist loadfile` finish together. xdist's
# default orders files by their number of tests, which started the longest files (few, slow tests) last and left
# one worker idle for up to two minutes at the end. Seconds from the suite's command with `--durations=0`
# (2026-12-06, thirtieth session, with the flags above; test_distributed.py and test_leakage_resume.py
# 2026-12-07); files not listed follow in their usual order. A stale figure only costs balance, never correctness.
_SLOW_FILES = {"test_study.py": 109, "test_attacks.py": 101, "test_multi_step.py": 101, "test_eavesdrop.py": 94,
               "test_aggregation.py": 66, "test_readme.py": 57, "test_training.py": 53, "test_distributed.py": 53,
               "test_study_execution.py": 49, "test_federated.py": 43, "test_benchmark_errors.py": 33,
               "test_single_step.py": 32, "test_leakage_resume.py": 32,
               "test_sharding.py": 27, "test_rlu.py": 25, "test_reference_way.py": 24, "test_models.py": 22,
               "test_ldp_pipeline.py": 20, "test_robustness.py": 18, "test_conformance.py": 17,
               "test_compile_cache.py": 17, "test_privacy.py": 16, "test_storage.py": 16}


def pytest_configure(config):
  if hasattr(config.option, "loadscopereorder"):              # pytest-xdist >= 3.6
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
  cost = {}
  for item in items:
    cost.setdefault(item.path, _SLOW_FILES.get(item.path.name, 0))
  order = {path: i for i, path in enumerate(cost)}
  items.sort(key=lambda item: (-cost[item.path], order[item.path]))   # stable: tests keep their order in a file
