"""Command-line plumbing for the entry points in experiments/: flags -> a validated config -> one library call.

Each entry point keeps its flags in its own `flags.FlagValues` (so several can be imported in one process, e.g.
by tests) and runs through `run` (as a program) or `call` (in-process). Every error a user can cause ends in one
line on stderr, `error: <what is wrong and what is allowed>`, and a non-zero exit, never a traceback:

  >>> from absl import flags
  >>> fv = flags.FlagValues()
  >>> _ = flags.DEFINE_list("clients", None, "subject ids", flag_values=fv)
  >>> def main(argv):
  ...   print(int_list(fv, "clients"))
  >>> call(main, fv, ["--clients=3,1"])
  (3, 1)
  0
"""
from __future__ import annotations

import codecs
import errno
import logging as std_logging
import math
import os
import re
import signal
import sys
from typing import Callable, Optional, Sequence

from absl import app, flags, logging

from jaxleak import attacks as A
from jaxleak import data as D
from jaxleak import compile_cache, gpu_numerics, models, storage

#: Exceptions that mean "the user asked for something impossible": reported in one line, exit code 2.
USER_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError, FloatingPointError, ImportError)


class Stopped(Exception):
  """A command stopped for a reason other than its input (e.g. Ray workers that died), said in one line; exit 1."""


class FlagError(ValueError):
  """A flag's value is not allowed: the message names the flag, the value and what is allowed."""


def _message(e: BaseException) -> str:
  msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  return " ".join(msg.strip().split("\n")[0:1]) or type(e).__name__


def _flagify(msg: str, fv: flags.FlagValues) -> str:
  """Config errors start with the field name; where that is also a flag, say '--field'."""
  m = re.match(r"([a-z_]+)(\s|:)", msg)
  if m and m.group(1) in fv and not msg.startswith("--"):
    return "--" + msg
  return msg


def backend_failure() -> Optional[str]:
  """Why JAX cannot start its backend in this process (e.g. JAX_PLATFORMS=cuda on a machine without CUDA: jax 0.10
  raises a bare AssertionError deep in its first array), or None where it can or JAX was never imported."""
  if "jax" not in sys.modules:
    return None
  import jax
  try:
    jax.devices()
  except Exception as e:                               # whatever JAX raises here, it is the backend's failure
    return " ".join(_message(e).split()) or type(e).__name__
  return None


#: JAX's words when a collective of a jax.distributed run failed for want of another process. Found 2026-12-07 with
#: one of two CPU processes killed (jax 0.10): "Gloo context initialization failed: DEADLINE_EXCEEDED: GetKeyValue()
#: timed out" (a RuntimeError, 30 s later) or "Gloo AllGather failed: ... Connection closed by peer" (a ValueError).
_LOST_PROCESS_SIGNS = ("gloo", "DEADLINE_EXCEEDED", "UNAVAILABLE:", "CoordinationService", "heartbeat",
                       "Connection closed by peer", "Socket closed")


def lost_process(e: BaseException) -> Optional[str]:
  """JAX's first line where `e` is an error of a running jax.distributed job (more than one process) whose words
  say a collective could not reach another process, e.g. one that was killed; otherwise None."""
  if not isinstance(e, (RuntimeError, ValueError)) or not _distributed_running():
    return None
  text = _message(e)
  if not any(sign.lower() in text.lower() for sign in _LOST_PROCESS_SIGNS):
    return None
  return text if len(text) <= 300 else text[:297] + "..."


def _said_lost_process(e: BaseException) -> bool:
  """Prints one line and returns True where `e` is `lost_process`'s."""
  lost = lost_process(e)
  if lost is None:
    return False
  import jax
  n = jax.process_count()
  print(f"error: this process ({jax.process_index()} of {n}) of a --distributed run could not reach the others, "
        f"most likely because one of them stopped (JAX: {lost}). Whatever was already stored is kept whole; start "
        f"all {n} processes again with the same command (a study continues where it stopped).", file=sys.stderr)
  return True


def execute(main: Callable[[list[str]], object], fv: flags.FlagValues, argv: list[str]) -> int:
  """Calls main(argv) with parsed flags `fv`: 0 when it returns, 2 after one line on stderr for a user error
  (`FlagError` or one of `USER_ERRORS`, a config's refusal), 1 after one line for `Stopped`; anything else
  propagates with its traceback."""
  try:
    main(argv)
  except FlagError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Stopped as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except USER_ERRORS as e:
    if not _said_lost_process(e):
      print(f"error: {_flagify(_message(e), fv)}", file=sys.stderr)
    return 2
  except (MemoryError, RuntimeError, AssertionError) as e:
    why = backend_failure()
    if why is not None:
      platforms = os.environ.get("JAX_PLATFORMS", "")
      asked = f"JAX_PLATFORMS={platforms}: " if platforms else ""
      print(f"error: JAX could not start a device backend ({asked}{why}): this machine has no such device, or JAX's "
            "plugin for it is missing; unset JAX_PLATFORMS (or set it to cpu), or install JAX with that plugin "
            "(JAX's installation guide; e.g. pip install -U 'jax[cuda12]').", file=sys.stderr)
      return 2
    if isinstance(e, AssertionError):
      raise
    if _said_lost_process(e):
      return 2
    # NumPy's MemoryError, or XLA's RESOURCE_EXHAUSTED (a JaxRuntimeError): sizes too large for this machine, e.g.
    # --replicates=100000 or --local_epochs=100000000 (found 2026-12-04, sixteenth session: tracebacks). jaxlib
    # 0.7's XLA:CPU says "INTERNAL: ... Out of memory allocating N bytes." instead (found at the lower bound).
    text = _message(e)
    if not (isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text):
      raise
    detail = (text[text.index("Out of memory"):] if "Out of memory" in text
              else text.removeprefix("RESOURCE_EXHAUSTED: "))
    chunk = ", or --chunk_size, the updates computed at once" if "chunk_size" in fv else ""
    print(f"error: out of memory ({detail}): the sizes asked for need "
          "more memory than this machine has; lower them (participants, replicates, epochs, examples, clients or "
          f"settings{chunk}), or run on a larger machine. Anything already stored is kept.", file=sys.stderr)
    return 2
  return 0


flags.DEFINE_string("compilation_cache", None,
                    "Folder for JAX's persistent compilation cache, or 'off' (default: $JAXLEAK_COMPILATION_CACHE, "
                    "else ~/.cache/jaxleak/jax): a repeated command loads its compiled programs instead of "
                    "compiling them again.")
flags.DEFINE_boolean("gpu_determinism", None,
                     "On a GPU, ask XLA for run-to-run deterministic kernels (--xla_gpu_deterministic_ops), so that "
                     "resumed and sharded runs are bitwise the unbroken run; --gpu_determinism=false allows the "
                     "faster nondeterministic ones (default: $JAXLEAK_GPU_DETERMINISM, else on). No effect on CPU.")


#: Flags of every command (defined here, in absl's global FLAGS): how the process runs, not what it computes.
PROCESS_FLAGS = ("compilation_cache", "gpu_determinism")


def adopt_flags(fv: flags.FlagValues, into: flags.FlagValues, program: str) -> None:
  """Adds `fv`'s flags to `into` (absl's global FLAGS when run as a program) as flags of `program`.

  absl's --help lists the flags registered for the main module (sys.argv[0]); flags appended from their own
  FlagValues are registered for no module, so without this --help showed none of a command's own flags.
  """
  into.append_flag_values(fv)
  own = [into[name] for name in fv]
  own += [into[name] for name in PROCESS_FLAGS if name in into]
  for flag in {id(f): f for f in own}.values():
    into.register_flag_by_module(program, flag)


#: What a program says when Ctrl-C stops it (exit status 130; "terminated" and 143 for SIGTERM, e.g. a scheduler's
#: time limit). Every durable write is atomic, so it is true at any moment: stored things are whole, the one being
#: written is not there.
INTERRUPTED = ("interrupted: whatever was already stored is kept whole (study records, checkpoints, finished result "
               "folders); run the same command again to continue a study, a fold training or an Eavesdrop run where "
               "it stopped.")


def _stop_at_once(signum, frame) -> None:
  """SIGINT/SIGTERM handler of programs: one line, then exit without unwinding. A KeyboardInterrupt is not enough:
  raised inside JAX's gc callback Python drops it ("Exception ignored in _xla_gc_callback") and the run goes on,
  and unwinding past running XLA threads crashed the interpreter's shutdown once (SIGSEGV after the message).
  Stopping at any moment is what kill -9 does, which every write of `storage` is made to survive."""
  _flush_output()
  message = INTERRUPTED if signum == signal.SIGINT else INTERRUPTED.replace("interrupted:", "terminated (SIGTERM):")
  try:
    os.write(2, (message + "\n").encode())
  finally:
    os._exit(128 + signum)


def _distributed_running() -> bool:
  """True in a running jax.distributed job of more than one process."""
  if "jax" not in sys.modules:
    return False
  import jax
  try:
    return jax.process_count() > 1
  except Exception:                                     # no backend
    return False


def _flush_output() -> None:
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass


def _replace_what_the_terminal_cannot_show() -> None:
  """Output streams that are not UTF-8 (PYTHONIOENCODING=ascii, an ASCII-only locale) print '?' for characters they
  cannot encode (the tables' '±'), where printing the results table failed after the work ("'ascii' codec can't
  encode character '\\xb1'", found 2026-12-06)."""
  for stream in (sys.stdout, sys.stderr):
    try:
      if codecs.lookup(stream.encoding).name != "utf-8":
        stream.reconfigure(errors="replace")
    except (AttributeError, LookupError, TypeError, ValueError):   # a replaced stream without these: leave it
      pass


def run(main: Callable[[list[str]], object], fv: flags.FlagValues) -> None:
  """Runs `main` as a program: parses the command line into `fv` (plus absl's own flags: --help, --flagfile,
  logging, --compilation_cache and --gpu_determinism), sets float32 matmuls and, where a GPU may be used, asks
  XLA:GPU for deterministic kernels (`jaxleak.gpu_numerics`), switches on the persistent compilation cache
  (`jaxleak.compile_cache`), calls main(argv) and exits with its status (2 and one line on stderr for a user error,
  130 and `INTERRUPTED` for Ctrl-C, at once). `call` (in-process) leaves JAX's process-wide configuration alone."""
  adopt_flags(fv, flags.FLAGS, sys.argv[0])

  def with_cache(argv):
    for signum in (signal.SIGINT, signal.SIGTERM):
      signal.signal(signum, _stop_at_once)
    _replace_what_the_terminal_cannot_show()
    # JAX logs at INFO that it found no TPU on every CPU/GPU machine; that line is noise, not progress.
    std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
    gpu_numerics.configure(flags.FLAGS.gpu_determinism)           # before JAX creates its backends
    given = flags.FLAGS.compilation_cache
    from_env = not given and bool(os.environ.get(compile_cache.ENV_VAR))
    compile_cache.configure(compile_cache.resolve(given), explicit=bool(given) or from_env,
                            named_by=f"${compile_cache.ENV_VAR}" if from_env else "--compilation_cache")
    return main(argv)

  def wrapped(argv):
    fv.mark_as_parsed()
    try:
      status = execute(with_cache, fv, argv)
    except KeyboardInterrupt:                          # where a library replaced `_stop_at_once` (e.g. Ray's driver)
      print(INTERRUPTED, file=sys.stderr)
      status = 130                                     # 128 + SIGINT, as shells report it
    if status and _distributed_running():
      # jax.distributed's shutdown at exit waits at a barrier for every process, so a failed process (or the others,
      # when one has stopped) would wait there and then be aborted by JAX in a C++ stack trace. The line is said.
      _flush_output()
      os._exit(status)
    sys.exit(status)

  app.run(wrapped, flags_parser=parse_or_exit)


#: Flags that name a folder. The shell leaves '~' alone after '=' (`--output_dir=~/x`), so it is expanded here:
#: before 2026-12-06 that run wrote to a folder named '~' in the working directory.
PATH_FLAGS = ("output_dir", "study_dir", "data_dir", "checkpoint_dir", "tables_dir")


def expand_home(fv: flags.FlagValues) -> None:
  """Expands a leading '~' in the folder flags (`PATH_FLAGS`) of parsed `fv`, as a shell would."""
  for name in PATH_FLAGS:
    if name in fv and isinstance(fv[name].value, str) and fv[name].value.startswith("~"):
      fv[name].value = os.path.expanduser(fv[name].value)


def parse_or_exit(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing for app.run, with a bad flag (unknown, or a value of the wrong type or not among an enum's)
  reported as every other user error is: one line on stderr and exit status 2 (absl's own parser prints two lines,
  "FATAL Flags parsing error", and exits with 1)."""
  try:
    rest = flags.FLAGS(list(argv))
  except flags.Error as e:
    print(f"error: {' '.join(str(e).split())} (--helpshort lists the flags)", file=sys.stderr)
    sys.exit(2)
  expand_home(flags.FLAGS)
  return rest


def call(main: Callable[[list[str]], object], fv: flags.FlagValues, args: Sequence[str],
         prog: str = "jaxleak") -> int:
  """Runs `main` in-process on command-line `args` (without the program name) and returns the exit status:
  0 on success, 2 after printing one line for a bad flag or any user error. Flags are reset to their defaults
  first, so calls do not leak into one another."""
  fv.unparse_flags()
  try:
    argv = fv([prog, *args])
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  expand_home(fv)
  return execute(main, fv, argv)


def no_positional(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise FlagError(f"unexpected arguments {list(argv[1:])}; every option is a --flag (see --help).")


# --- validated flag values ----------------------------------------------------------------------------------------

def _number_list(fv: flags.FlagValues, name: str, cast, what: str, unique: bool):
  raw = fv[name].value
  if raw is None:
    return None
  if not raw:
    raise FlagError(f"--{name} is empty; give comma-separated {what}s such as 1,2,3 (or leave it unset).")
  out = []
  for item in raw:
    try:
      value = cast(item)
    except ValueError:
      article = "an" if what[0] in "aeiou" else "a"
      raise FlagError(f"--{name}={','.join(raw)}: {item!r} is not {article} {what}; give comma-separated {what}s "
                      "such as 1,2,3.") from None
    if isinstance(value, float) and not math.isfinite(value):
      raise FlagError(f"--{name}={','.join(raw)}: {item!r} is not a finite number.")
    out.append(value)
  if unique and len(set(out)) != len(out):
    dup = sorted({v for v in out if out.count(v) > 1})
    raise FlagError(f"--{name}={','.join(raw)}: {dup} listed more than once; list each once.")
  return tuple(out)


def int_list(fv: flags.FlagValues, name: str, *, unique: bool = True) -> Optional[tuple[int, ...]]:
  """A comma-separated list flag as ints (None when unset); refuses non-integers, an empty list and repeats."""
  return _number_list(fv, name, int, "integer", unique)


def float_list(fv: flags.FlagValues, name: str, *, unique: bool = True) -> Optional[tuple[float, ...]]:
  """A comma-separated list flag as finite floats (None when unset); refuses an empty list and repeats."""
  return _number_list(fv, name, float, "number", unique)


def attack_list(fv: flags.FlagValues) -> tuple[str, ...]:
  """--attacks: registered names and group names (`A.ATTACK_GROUPS`, expanded in place), none repeated."""
  try:
    return A.expand_groups([v.strip() for v in fv["attacks"].value or []], "--attacks")
  except ValueError as e:
    raise FlagError(str(e)) from None


def check(fv: flags.FlagValues, name: str, ok: bool, allowed: str) -> None:
  """Raises FlagError('--name=value: allowed') unless ok."""
  if not ok:
    value = fv[name].value
    value = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    raise FlagError(f"--{name}={value}: must be {allowed}.")


def positive_int(fv: flags.FlagValues, name: str) -> None:
  v = fv[name].value
  check(fv, name, v is not None and v > 0, "a positive integer")


def finite(fv: flags.FlagValues, name: str, lo: float = -math.inf, hi: float = math.inf, *,
           lo_open: bool = False, hi_open: bool = False) -> None:
  """The float flag is finite and within [lo, hi] (open ends as asked)."""
  v = fv[name].value
  ok = v is not None and math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
  # An infinite end is always open: "finite number in (0, inf)", never "(0, inf]".
  lo_s = ("(" if lo_open or not math.isfinite(lo) else "[") + (f"{lo:g}" if math.isfinite(lo) else "-inf")
  hi_s = (f"{hi:g}" if math.isfinite(hi) else "inf") + (")" if hi_open or not math.isfinite(hi) else "]")
  check(fv, name, ok, f"a finite number in {lo_s}, {hi_s}")


def output_folder(fv: flags.FlagValues, name: str = "output_dir", *, replaced: bool = False) -> str:
  """The output folder flag, checked writable before any work; with `replaced` (the run writes the folder whole)
  also that replacing it deletes nothing jaxleak did not write (`storage.check_replaceable_folder`)."""
  path = fv[name].value
  if not path:
    raise FlagError(f"--{name} is empty; give a folder to write results to.")
  writable(path, name)
  if replaced:
    try:
      storage.check_replaceable_folder(path, f"--{name}")
    except storage.StorageError as e:
      raise FlagError(str(e)) from None
  return path


def writable(path: str, flag: str) -> str:
  """`path` if it is (or can be made) a writable folder; else FlagError naming --flag."""
  try:
    storage.check_writable_folder(path, f"--{flag}")
  except storage.StorageError as e:
    raise FlagError(str(e)) from None
  return path


progress = logging.info


# --- the leakage drivers' shared flags ----------------------------------------------------------------------------

def define_har_data_flags(fv: flags.FlagValues) -> None:
  """--dataset, --data_dir, --synthetic_scale, --model, --head_bias: a HAR dataset and the model trained on it."""
  d = dict(flag_values=fv)
  flags.DEFINE_enum("dataset", "hapt", list(D.DATASETS),
                    "Dataset; wear/wetlab/tal need --data_dir (tal: your own data in their layout).", **d)
  flags.DEFINE_string("data_dir", None, "Folder with raw/inertial/sbj_*.csv and annotations/loso_sbj_*.json.", **d)
  flags.DEFINE_float("synthetic_scale", 1.0, "Length multiplier for synthetic datasets (> 0).", **d)
  flags.DEFINE_enum("model", "deepconvlstm", list(models.names()), "Model architecture.", **d)
  flags.DEFINE_bool("head_bias", True, "Build the classifier head with a bias (the paper's models have one).", **d)


def check_data_flags(fv: flags.FlagValues) -> None:
  """--synthetic_scale in (0, inf); --data_dir and --synthetic_scale refused where --dataset does not read them
  (silently ignoring them would label a run with a setting it never had)."""
  finite(fv, "synthetic_scale", 0.0, lo_open=True)
  dataset = fv.dataset
  if fv.data_dir and dataset not in D.FILE_DATASETS:
    raise FlagError(f"--data_dir is read only with --dataset={', '.join(D.FILE_DATASETS)}; --dataset={dataset} "
                    f"does not use it: drop --data_dir.")
  if fv.synthetic_scale != 1.0 and dataset not in D.SYNTHETIC_DATASETS:
    raise FlagError(f"--synthetic_scale={fv.synthetic_scale:g} applies to {', '.join(D.SYNTHETIC_DATASETS)} only; "
                    f"--dataset={dataset} is used whole: drop --synthetic_scale.")


def define_leakage_flags(fv: flags.FlagValues, *, multi_step: bool) -> None:
  """Flags shared by experiments/single_step_leakage.py and multi_step_leakage.py, defined into `fv`."""
  from jaxleak.federated.apply import CLIENT_LOSSES
  from jaxleak.runs.leakage.config import COHORT_DEALINGS
  d = dict(flag_values=fv)
  define_har_data_flags(fv)
  flags.DEFINE_enum("sampling", "shuffle", list(D.STRATEGIES), "How each client's updates are sampled.", **d)
  flags.DEFINE_integer("num_samples", 500 if multi_step else 100,
                       "N, windows per client update (the reference's --batch_size / --num_data_points).", **d)
  flags.DEFINE_list("attacks", list(A.HAR_PAPER_ATTACKS),
                    f"Attacks, from: {', '.join(A.names())}; or a group: all (every attack), paper (the HAR paper's "
                    "five), har_code (the five as its code runs them), bias or weight (every attack reading that "
                    "gradient).", **d)
  flags.DEFINE_list("clients", None, "Subject ids to attack (default: all).", **d)
  flags.DEFINE_integer("num_clients", None, "Attack only the first k subjects (of --clients when given; all of them "
                       "if there are k or fewer).", **d)
  flags.DEFINE_integer("seed", 1, "Run seed (model init, sampling, dropout, attack randomness).", **d)
  flags.DEFINE_float("dropout", None, "The model's dropout rate in [0, 1) (default: the model's own, 0.5).", **d)
  flags.DEFINE_float("compression", 0.0, "Defence: each client uploads only the largest (1 - CR) fraction of every "
                     "head gradient leaf (top-CR, in [0, 1); 0 = off).", **d)
  flags.DEFINE_float("dirichlet_alpha", None, "Re-deal the (selected) subjects' windows to non-IID clients with "
                     "label proportions ~ Dir(alpha) (> 0; small = few labels each). Default: one client per subject.",
                     **d)
  flags.DEFINE_integer("dirichlet_clients", None, "With --dirichlet_alpha: the number of clients (default: as many "
                       "as subjects).", **d)
  flags.DEFINE_enum("client_loss", "mean", list(CLIENT_LOSSES),
                    "The clients' loss" + (" in every local step" if multi_step else "") + ": the papers' mean CE, or "
                    "class-weighted by each client's own label counts (sklearn 'balanced', PyTorch's "
                    "CrossEntropyLoss(weight=)); beyond the papers.", **d)
  flags.DEFINE_integer("aggregate_clients", 1, "Secure aggregation (beyond the papers): the server sees only the "
                       "mean update of K clients a round; the clients are dealt into cohorts of K, each round of a "
                       "cohort covers K x N windows, scored per cohort (1 = each client's own update).", **d)
  flags.DEFINE_enum("cohort_dealing", "once", list(COHORT_DEALINGS),
                    "With --aggregate_clients > 1: deal the clients into cohorts once, kept for every round, or anew "
                    "for every round (as a server that selects each round's clients), which lets the server solve "
                    "each client's label distribution from all rounds (scored in a third table, profiles.csv).", **d)
  flags.DEFINE_bool("minmax", not multi_step, "Per-update min-max input scaling.", **d)
  flags.DEFINE_integer("chunk_size", None, "Updates vmapped together (memory vs speed; default on CPU 8, or 1 where "
                       "a full backward pass is computed: local training, whole-model clipping; on a GPU or TPU about "
                       "6,400 windows' worth, 8 to 256).", **d)
  flags.DEFINE_float("noise", 0.0, "LDP: Gaussian noise std sigma (0 = none)" +
                     (", per local step." if multi_step else "."), **d)
  flags.DEFINE_float("clip", 0.0, "LDP: clip to L2 norm tau before the noise (0 = no clipping).", **d)
  flags.DEFINE_enum("clip_scope", "all", ["all", "last_layer"],
                    "Norm over the whole model (the HAR code) or the classifier head only (the HAR paper's text).", **d)
  flags.DEFINE_enum("model_state", "untrained", ["untrained", "trained"],
                    "Attack a fresh Xavier-normal init, or the trained LOSO fold models of --checkpoint_dir.", **d)
  flags.DEFINE_string("checkpoint_dir", None, "Trained models from train_models.py (default: "
                      "checkpoints/<dataset>_<model>).", **d)
  flags.DEFINE_string("output_dir", "results/multi_step" if multi_step else "results/single_step",
                      "Where to write the results.", **d)
  define_distributed_flags(fv)


def define_distributed_flags(fv: flags.FlagValues) -> None:
  """--distributed and its coordinator flags: one run's updates computed by several JAX processes."""
  d = dict(flag_values=fv)
  flags.DEFINE_bool("distributed", False, "Run as one of several JAX processes (jax.distributed.initialize): each "
                    "computes a share of the client updates; process 0 writes the results. On Slurm/Open MPI the "
                    "coordinator flags are detected.", **d)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (with --distributed).", **d)
  flags.DEFINE_integer("num_processes", None, "Number of processes (with --distributed).", **d)
  flags.DEFINE_integer("process_id", None, "This process's index (with --distributed).", **d)
  flags.DEFINE_integer("distributed_timeout", 300, "Seconds a process waits for the others and the coordinator "
                       "(with --distributed).", lower_bound=1, **d)


def check_distributed_flags(fv: flags.FlagValues) -> None:
  """Refuses (FlagError) distributed flags given without --distributed, and values no process could start with;
  no side effects, so a --dry_run refuses what a run would."""
  if not fv.distributed:
    for name in ("coordinator_address", "num_processes", "process_id"):
      if fv[name].value is not None:
        raise FlagError(f"--{name} is only used with --distributed.")
    if fv["distributed_timeout"].present:
      raise FlagError("--distributed_timeout is only used with --distributed.")
    return
  if fv.num_processes is not None:
    positive_int(fv, "num_processes")
  if fv.process_id is not None:
    check(fv, "process_id", fv.num_processes is None or 0 <= fv.process_id < fv.num_processes,
          f"in [0, --num_processes={fv.num_processes})")
  if fv.coordinator_address is not None:
    _host_port(fv.coordinator_address)


def init_distributed(fv: flags.FlagValues, argv: Sequence[str] = ()) -> bool:
  """Starts jax.distributed when --distributed is set (before any JAX computation) and checks that every process
  was given the same command (`argv` and flags, see `_check_same_command`); True for the process that writes
  results (process 0, or the only one)."""
  check_distributed_flags(fv)
  if not fv.distributed:
    return True
  import jax
  if fv.coordinator_address is not None:
    host, port = _host_port(fv.coordinator_address)
    if fv.process_id:            # process 0 starts the coordinator; the others first wait until it answers
      _wait_for_coordinator(host, port, fv.distributed_timeout)
    elif fv.process_id == 0:
      _check_port_free(port)
  # A process that never joins cannot be caught here: jax.distributed aborts the process after the timeout, in its
  # own words. This line, just before, says what that abort means.
  progress(f"jax.distributed: joining {fv.num_processes or 'the detected'} processes"
           f"{' at ' + fv.coordinator_address if fv.coordinator_address else ''}; waiting up to "
           f"--distributed_timeout={fv.distributed_timeout} s for all (if one never joins, jax.distributed ends "
           "this process with DEADLINE_EXCEEDED; if one stops midway, the others stop too, within about two "
           "minutes, in one line or in JAX's words 'another task died')")
  try:
    jax.distributed.initialize(coordinator_address=fv.coordinator_address, num_processes=fv.num_processes,
                               process_id=fv.process_id, initialization_timeout=fv.distributed_timeout)
  except (RuntimeError, ValueError) as e:          # jax's JaxRuntimeError is a RuntimeError
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise FlagError(f"--distributed: jax.distributed could not start ({first}); check --coordinator_address, "
                    "--num_processes and --process_id (or the cluster's detected settings).") from None
  progress(f"process {jax.process_index()} of {jax.process_count()}; {jax.device_count()} devices in all")
  _check_same_command(fv, argv)
  return jax.process_index() == 0


#: Flags that may differ between the processes of one --distributed run: who a process is, how it reaches the
#: others, its compilation cache, and folders (one shared folder may be mounted at other paths; only process 0
#: writes, and it tells the others what is done).
_PER_PROCESS_FLAGS = ("process_id", "coordinator_address", "distributed_timeout", "compilation_cache", *PATH_FLAGS)


def _check_same_command(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  """FlagError on every process when the processes of a jax.distributed run were given different commands (other
  flags, `--set` values or arguments, folders aside): each computes a share of the same updates, so the shares
  would not fit together. Found 2026-12-07: `--set num_clients=2` and `=3` on the two processes of a study ended
  in gloo's C++ abort on process 0 ("Gloo AllGather failed" on the other)."""
  import hashlib
  import json

  import numpy as np
  from jax.experimental import multihost_utils
  same = {name: value for name, value in fv.flag_values_dict().items() if name not in _PER_PROCESS_FLAGS}
  text = json.dumps([list(argv[1:]), sorted(same.items())], default=str, sort_keys=True)
  digest = np.frombuffer(hashlib.sha256(text.encode("utf-8")).digest()[:16], np.uint8)
  digests = np.asarray(multihost_utils.process_allgather(digest))              # [processes, 16]
  other = [i for i in range(len(digests)) if not np.array_equal(digests[i], digests[0])]
  if other:
    raise FlagError(f"--distributed: process{'es' if len(other) > 1 else ''} {', '.join(map(str, other))} "
                    f"{'were' if len(other) > 1 else 'was'} started with another command than process 0 (other "
                    "flags, --set values or arguments): each process computes a share of the same work; give every "
                    "process the same command, with its own --process_id (folders may differ).")


def _host_port(address: str) -> tuple[str, int]:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise FlagError(f"--coordinator_address={address}: must be host:port (e.g. 10.0.0.1:1234 or localhost:1234), "
                    "the address where process 0 listens.")
  return host.strip("[]"), int(port)


def _check_port_free(port: int) -> None:
  """FlagError when something already listens on `port` here (process 0's coordinator would fail to start, with
  "Failed to start RPC server" and a traceback)."""
  import socket
  for family, address in ((socket.AF_INET6, ("::", port)), (socket.AF_INET, ("0.0.0.0", port))):
    try:
      with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(address)
      return
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise FlagError(f"--coordinator_address: port {port} is in use on this machine (process 0 starts the "
                        "coordinator there); choose a free port for every process.") from None
      # no IPv6 here: try IPv4


def _wait_for_coordinator(host: str, port: int, timeout_s: float) -> None:
  """Returns once something accepts TCP connections at host:port; FlagError after `timeout_s`. (Without this, a
  wrong address makes jax.distributed abort the process after its timeout, in a C++ stack trace.)"""
  import socket
  import time
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      socket.create_connection((host, port), timeout=min(5.0, timeout_s)).close()
      return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise FlagError(f"--coordinator_address={host}:{port}: nothing answered there within "
                        f"--distributed_timeout={timeout_s:g} s ({(e.strerror or type(e).__name__).lower()}); start "
                        "process 0 (it listens there) or fix the address. Nothing was run.") from None
      time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _checkpoint_dir(fv: flags.FlagValues) -> Optional[str]:
  if fv.model_state == "untrained":
    if fv.checkpoint_dir:
      raise FlagError("--checkpoint_dir is only used with --model_state=trained.")
    return None
  return fv.checkpoint_dir or default_checkpoint_dir(fv.dataset, fv.model)


def default_checkpoint_dir(dataset: str, model: str) -> str:
  """Where train_models.py puts a dataset's and model's fold checkpoints by default."""
  import os
  return os.path.join("checkpoints", f"{dataset}_{model}")


def _refuse_clip_options_without_clip(fv: flags.FlagValues) -> None:
  """--clip_scope/--clip_granularity say how --clip clips; without clipping (--clip=0, and no --ldp_grid, whose
  settings clip) nothing reads them, and a run would look like one with that clipping."""
  if fv.clip > 0 or ("ldp_grid" in fv and fv.ldp_grid):
    return
  for name in ("clip_scope", "clip_granularity"):
    if name in fv and fv[name].present:
      raise FlagError(f"--{name}={fv[name].value}: says how --clip clips, but there is no clipping (--clip=0, the "
                      f"default): give --clip=<tau> > 0 as well, or drop --{name}.")


def leakage_config(fv: flags.FlagValues, **overrides):
  """The LeakageConfig the leakage flags describe (validated: a bad value raises, naming the flag)."""
  from jaxleak.runs.leakage import LeakageConfig
  check_data_flags(fv)
  positive_int(fv, "num_samples")
  if fv.chunk_size is not None:
    positive_int(fv, "chunk_size")
  if fv.num_clients is not None:
    positive_int(fv, "num_clients")
  finite(fv, "noise", 0.0)
  finite(fv, "clip", 0.0)
  if fv.dirichlet_alpha is not None:
    finite(fv, "dirichlet_alpha", 0.0, lo_open=True)
  if fv.dropout is not None:
    finite(fv, "dropout", 0.0, 1.0, hi_open=True)
  finite(fv, "compression", 0.0, 1.0, hi_open=True)
  positive_int(fv, "aggregate_clients")
  if fv.dirichlet_clients is not None:
    positive_int(fv, "dirichlet_clients")
    check(fv, "dirichlet_clients", fv.dirichlet_alpha is not None, "given with --dirichlet_alpha")
  _refuse_clip_options_without_clip(fv)
  cfg = LeakageConfig(
      checkpoint_dir=_checkpoint_dir(fv), dataset=fv.dataset, data_dir=fv.data_dir,
      synthetic_scale=fv.synthetic_scale, model=fv.model, head_bias=fv.head_bias, sampling=fv.sampling,
      num_samples=fv.num_samples, attacks=attack_list(fv), clients=int_list(fv, "clients"),
      num_clients=fv.num_clients, seed=fv.seed, minmax=fv.minmax, chunk_size=fv.chunk_size,
      dirichlet_alpha=fv.dirichlet_alpha, dirichlet_clients=fv.dirichlet_clients, dropout=fv.dropout,
      compression=fv.compression, client_loss=fv.client_loss, aggregate_clients=fv.aggregate_clients,
      cohort_dealing=fv.cohort_dealing, **overrides)
  cfg.validate()
  return cfg
