import os

# Tests run on CPU with 4 fake devices so sharded code paths are exercised without accelerators.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
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
# one worker idle for up to two minutes at the end. Seconds from `.ci/run` with `--durations=0` (2026-12-04);
# files not listed follow in their usual order. A stale figure only costs balance, never correctness.
_SLOW_FILES = {"test_eavesdrop.py": 203, "test_training.py": 154, "test_study.py": 141, "test_multi_step.py": 134,
               "test_attacks.py": 121, "test_readme.py": 89, "test_models.py": 78, "test_sharding.py": 76,
               "test_rlu.py": 72, "test_single_step.py": 66, "test_robustness.py": 63, "test_federated.py": 62,
               "test_study_execution.py": 58, "test_conformance.py": 53, "test_reference_way.py": 49,
               "test_ldp_pipeline.py": 46, "test_privacy.py": 30, "test_data.py": 26}


def pytest_configure(config):
  if hasattr(config.option, "loadscopereorder"):              # pytest-xdist >= 3.6
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
  cost = {}
  for item in items:
    cost.setdefault(item.path, _SLOW_FILES.get(item.path.name, 0))
  order = {path: i for i, path in enumerate(cost)}
  items.sort(key=lambda item: (-cost[item.path], order[item.path]))   # stable: tests keep their order in a file
