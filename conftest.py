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
