"""What XLA computes for the command-line entry points off the CPU: the same bits in every process, float32 in
float32.

Two defaults of JAX on accelerators would make the commands' results depend on more than their configuration:

* **Nondeterminism.** XLA:GPU picks GEMM and convolution kernels by timing them as it compiles (another process
  may pick another kernel, with other round-off), and scatters and some reductions use atomics. A study resumed
  after kill -9, a shard run on another machine of the same kind, or an Eavesdrop run continued from its
  checkpoint would then not be bitwise the run it continues. XLA's switch is `--xla_gpu_deterministic_ops=true`
  (deterministic kernels, the first working kernel instead of the fastest, no atomics), read from the environment
  variable XLA_FLAGS when JAX creates its GPU backend.
* **Reduced precision.** JAX's default precision computes float32 matmuls and convolutions in TensorFloat-32 on
  NVIDIA GPUs since Ampere (inputs rounded to 10 mantissa bits) and in one bfloat16 pass on TPUs (7 bits):
  gradients 1e-3 to 1e-2 off in relative terms, where the CPU, the reference code (which runs on the CPU) and the
  PyTorch twins of the tests compute in float32. The label attacks read signs and small differences of gradients.

So every command run through `jaxleak.cli.run` (and the Ray workers of a study) sets `jax_default_matmul_precision`
to "float32" (on every backend: XLA:CPU computes float32 anyway, and its results are bit for bit those without the
setting), and adds that flag to XLA_FLAGS before JAX starts where a GPU can be used (a CUDA or ROCm plugin of JAX
is installed and JAX_PLATFORMS does not rule it out; XLA:CPU and XLA:TPU are deterministic). Determinism is
switched off by `--gpu_determinism=false` or `JAXLEAK_GPU_DETERMINISM=off` (faster kernels, results that may
differ in the last bits between processes); an XLA_FLAGS that already names either determinism flag, and a
JAX_DEFAULT_MATMUL_PRECISION the user set, are left as the user wrote them (a record's provenance says what ran
off the CPU). Importing jaxleak as a library changes nothing: only `configure` does.

  >>> with_determinism("--xla_dump_to=/tmp/d")
  '--xla_dump_to=/tmp/d --xla_gpu_deterministic_ops=true'
  >>> with_determinism("--xla_gpu_deterministic_ops=false")       # the user's word wins
  '--xla_gpu_deterministic_ops=false'
  >>> gpu_possible({"JAX_PLATFORMS": "cpu"}, plugins=["jax_cuda13_plugin"])
  False
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Iterable, Mapping, MutableMapping, Optional

ENV_VAR = "JAXLEAK_GPU_DETERMINISM"
FLAG = "--xla_gpu_deterministic_ops=true"
#: XLA's flags that decide determinism on GPU; if XLA_FLAGS names one, the user has chosen.
XLA_NAMES = ("xla_gpu_deterministic_ops", "xla_gpu_exclude_nondeterministic_ops")
OFF = ("off", "false", "0", "no")
ON = ("", "on", "true", "1", "yes")
#: The commands' precision of float32 matmuls and convolutions (JAX's default is TF32 on recent GPUs, bf16 on TPUs).
MATMUL_PRECISION = "float32"
_GPU_WORDS = ("cuda", "rocm", "gpu")
#: JAX's names of a precision that computes float32 matmuls and convolutions in full float32.
_FULL_FLOAT32 = ("float32", "highest", "F32_F32_F32")


def with_determinism(xla_flags: str) -> str:
  """`xla_flags` (the value of XLA_FLAGS) with `FLAG` added, unless it already names one of `XLA_NAMES`."""
  if any(name in xla_flags for name in XLA_NAMES):
    return xla_flags
  return f"{xla_flags} {FLAG}".strip()


def jax_plugins() -> list[str]:
  """The names of JAX's installed PJRT plugins, found as JAX finds them (the `jax_plugins` namespace package and
  the `jax_plugins` entry points), without importing them or starting JAX."""
  import importlib.metadata
  import importlib.util
  import pkgutil
  names = set()
  try:
    spec = importlib.util.find_spec("jax_plugins")
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    names |= {name for _, name, _ in pkgutil.iter_modules(list(spec.submodule_search_locations))}
  names |= {ep.value for ep in importlib.metadata.entry_points(group="jax_plugins")}
  return sorted(names)


def gpu_possible(environ: Optional[Mapping[str, str]] = None, plugins: Optional[Iterable[str]] = None) -> bool:
  """Whether JAX may run on a GPU in this process: a CUDA or ROCm plugin is installed (`plugins`, default
  `jax_plugins()`) and JAX_PLATFORMS (in `environ`, default os.environ) is unset or names a GPU platform."""
  environ = os.environ if environ is None else environ
  platforms = environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms and not any(word in platforms for word in _GPU_WORDS):
    return False
  plugins = jax_plugins() if plugins is None else plugins
  return any(word in name.lower() for name in plugins for word in ("cuda", "rocm"))


def backends_started() -> bool:
  """Whether JAX has created its backends in this process (then XLA_FLAGS has been read, and changing it does
  nothing)."""
  bridge = sys.modules.get("jax._src.xla_bridge")
  return bool(getattr(bridge, "_backends", None))


def configure(determinism: Optional[bool] = None) -> None:
  """The commands' set-up, before JAX starts: `configure_determinism(determinism)` and `configure_precision()`."""
  configure_determinism(determinism)
  configure_precision()


def configure_precision() -> Optional[str]:
  """Sets JAX's default matmul and convolution precision to `MATMUL_PRECISION` unless the user has chosen one
  (JAX_DEFAULT_MATMUL_PRECISION). Returns the precision now in force."""
  import jax
  if jax.config.jax_default_matmul_precision is None:
    jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION)
  return jax.config.jax_default_matmul_precision


def key_fields() -> dict:
  """What a study's keys must hold about the numerics in force, beside the task's configuration: {} for full
  float32 matmuls (the commands' setting) and on the CPU (where every precision JAX accepts computes the same bits:
  a matmul and a convolution compared, jaxlib 0.10.2), else {"matmul_precision": <JAX's setting, or "default">}.
  Records computed at another precision (JAX_DEFAULT_MATMUL_PRECISION=tensorfloat32 on a GPU, or a library caller
  who left JAX's TF32/bf16 default) thus get keys of their own and never mix with float32 ones, while keys at
  float32 stay as they were."""
  import jax
  precision = jax.config.jax_default_matmul_precision
  if precision in _FULL_FLOAT32 or computes_on_cpu():
    return {}
  return {"matmul_precision": str(precision or "default")}


def _platforms() -> str:
  """JAX_PLATFORMS as JAX reads it (its config, set from the variable or by the program), lower case."""
  import jax
  return (jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")).strip().lower()


def computes_on_cpu() -> bool:
  """Whether JAX computes on the CPU in this process, found without starting JAX's backends where they have not
  started (a study's plan is made before `jax.distributed.initialize`, which must come first): the backend's name
  once started; before, JAX_PLATFORMS if set (CPU only when it names nothing else), else whether no accelerator
  plugin is installed (CUDA or ROCm, `gpu_possible`; TPU, the `libtpu` package)."""
  if backends_started():
    import jax
    return jax.default_backend() == "cpu"
  platforms = _platforms()
  if platforms:
    return {p.strip() for p in platforms.split(",") if p.strip()} <= {"cpu"}
  return not gpu_possible() and importlib.util.find_spec("libtpu") is None


def determinism_wanted(environ: Optional[Mapping[str, str]] = None) -> bool:
  """What `ENV_VAR` (in `environ`, default os.environ) asks for: on when unset. Raises ValueError for a value that is
  neither on nor off."""
  environ = os.environ if environ is None else environ
  raw = environ.get(ENV_VAR, "")
  if raw.strip().lower() not in ON + OFF:
    raise ValueError(f"${ENV_VAR}={raw!r}: give on or off (unset: on), e.g. JAXLEAK_GPU_DETERMINISM=off for XLA's "
                     "faster nondeterministic GPU kernels.")
  return raw.strip().lower() not in OFF


def configure_determinism(enabled: Optional[bool] = None, environ: Optional[MutableMapping[str, str]] = None,
                          plugins: Optional[Iterable[str]] = None) -> bool:
  """Asks XLA:GPU for run-to-run determinism (adds `FLAG` to XLA_FLAGS in `environ`, default os.environ) where a
  GPU may be used; call before JAX starts. `enabled`: the command's flag, also written to `ENV_VAR` for the
  processes this one starts; None reads `ENV_VAR` (default on).
  Returns whether the flag is now in XLA_FLAGS (False on a CPU-only install, when switched off, or when the
  user's XLA_FLAGS chose otherwise)."""
  environ = os.environ if environ is None else environ
  if enabled is None:
    enabled = determinism_wanted(environ)
  else:
    environ[ENV_VAR] = "on" if enabled else "off"                 # the commands this process starts agree
  current = environ.get("XLA_FLAGS", "")
  if enabled and gpu_possible(environ, plugins) and not backends_started():
    current = with_determinism(current)
    environ["XLA_FLAGS"] = current
  return FLAG in current.split()


def requested(environ: Optional[Mapping[str, str]] = None) -> Optional[bool]:
  """What XLA_FLAGS (in `environ`, default os.environ) says of GPU determinism: True or False where it names
  `--xla_gpu_deterministic_ops` or `--xla_gpu_exclude_nondeterministic_ops`, None where it names neither (XLA's
  default: not deterministic). For provenance."""
  environ = os.environ if environ is None else environ
  said = None
  for item in environ.get("XLA_FLAGS", "").split():
    name, _, value = item.lstrip("-").partition("=")
    if name in XLA_NAMES:
      said = bool(said) or value.strip().lower() not in ("false", "0")
  return said
