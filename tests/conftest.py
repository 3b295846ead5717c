import os

# Tests run on CPU with 4 fake devices so sharded code paths are exercised without accelerators.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
