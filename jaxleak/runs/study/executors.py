"""Running a study's groups elsewhere: one Ray task per group (optional extra `ray`).

Every task writes its records into the study folder, so the folder must be reachable from the workers (a shared
file system on a cluster; the local disk for a local Ray). Groups are independent; a group that fails is reported
and the rest still finish; rerunning the command resumes as with the local executor.

GPUs: Ray hides every GPU from a task that asks for none (it sets CUDA_VISIBLE_DEVICES to ''), so on a cluster
with GPUs each task asks for one by default (`gpus_per_task`; a fraction shares a GPU between groups, each then
held to its share of the GPU's memory). A worker sets its process up as the commands do before JAX starts: GPU
determinism as the driver chose it, and the driver's compilation cache where the worker can write to it.
"""
from __future__ import annotations

import math
import os
import socket
from typing import Callable, Optional, Sequence

from jaxleak.runs.study.plan import Plan
from jaxleak.runs.study.store import Store


class GroupsFailed(RuntimeError):
  """Groups whose Ray tasks did not finish (a worker or node died, or the group raised); `failures` holds (group
  label, one-line reason) pairs. The others finished; the command, run again, retries the failed ones."""

  def __init__(self, failures: Sequence[tuple[str, str]]):
    self.failures = list(failures)
    label, reason = self.failures[0]
    n = len(self.failures)
    super().__init__(f"{n} group{'s' if n != 1 else ''} failed on Ray, e.g. [{label}]: {reason}; run the same "
                     "command again to retry them (finished groups are kept); a group that fails again the same way "
                     "shows its whole traceback with --executor=local.")


def failure_reason(e: BaseException) -> str:
  """One line for a Ray task's failure: the exception the group raised on its worker (a RayTaskError's cause), or
  Ray's own first line (a worker or node that died)."""
  cause = getattr(e, "cause", None) if type(e).__name__.startswith("RayTaskError") else None
  shown = cause if isinstance(cause, BaseException) else e
  lines = [line.strip() for line in str(shown).splitlines() if line.strip()]
  text = lines[0].rstrip(".") if lines else ""     # a sentence's full stop, where the line goes on after it
  if shown is cause:
    text = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
  text = text or type(e).__name__
  return text if len(text) <= 300 else text[:297] + "..."


def require_ray():
  try:
    import ray
  except ImportError:
    raise ImportError("--executor=ray needs Ray: pip install 'jaxleak[ray]' (or pip install ray).") from None
  return ray


def _shown(address: str) -> tuple[str, str]:
  """(the address as it may be printed, its host:port): a user:password part is never printed."""
  hostport = address.split("://", 1)[1] if "://" in address else address
  if "@" not in hostport:
    return address, hostport
  userinfo, hostport = hostport.rsplit("@", 1)
  return address.replace(userinfo + "@", "***@", 1), hostport


def check_address(address: Optional[str], timeout_s: float = 5.0) -> None:
  """Raises ValueError unless something answers at a Ray cluster address 'host:port' or 'ray://host:port' (a TCP
  connection within `timeout_s`). None and 'auto' (Ray finds the cluster itself) are not checked. Without this,
  ray.init waits about a minute on a wrong address and then fails in Ray's words."""
  if address is None or address == "auto":
    return
  shown, hostport = _shown(address)
  host, _, port = hostport.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"--ray_address {shown!r}: expected host:port (e.g. 10.0.0.1:6379, the head node's "
                     "`ray start --head` address), ray://host:10001 or auto.")
  try:
    socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
  except OSError as e:
    reason = e.strerror or type(e).__name__
    raise ValueError(f"--ray_address {shown}: nothing answers at {host}:{port} ({reason.lower()}); start the "
                     "cluster there (ray start --head) or check the address. Nothing was run.") from None


def gpus_per_task(value: Optional[float], node_gpus: Sequence[float]) -> float:
  """The GPUs each Ray task asks for: `value` (the user's, checked), else 1 where a node of the cluster has a GPU
  and 0 where none has. `node_gpus`: the GPU count of each live node. Raises ValueError for a value no node can
  give (Ray would wait for it forever) or one Ray refuses (above 1 and not whole)."""
  most = max(node_gpus, default=0.0)
  if value is None:
    return 1.0 if most >= 1 else 0.0
  if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
    raise ValueError(f"--ray_gpus_per_task={value}: must be a number >= 0 (0: groups run on CPUs; a fraction such "
                     "as 0.5 shares a GPU between groups).")
  if value > 1 and value != int(value):
    raise ValueError(f"--ray_gpus_per_task={value}: above 1 Ray takes whole GPUs only; give 1, 2, ... or a "
                     "fraction of one.")
  if value > most:
    raise ValueError(f"--ray_gpus_per_task={value:g}: no node of this Ray cluster has that many GPUs (the most on "
                     f"one node: {most:g}), so no group could ever start; give at most {most:g}"
                     + (" (0: on CPUs)." if most else ", i.e. 0: this cluster has no GPUs."))
  return float(value)


def _set_up_worker(gpu_share: float, gpu_determinism_on: bool, cache: Optional[str],
                   numerics: Optional[dict] = None) -> None:
  """A Ray worker's process, as `jaxleak.cli.run` sets up a command's, before JAX starts in it (a worker that
  already ran a group keeps the setup of its first). `numerics`: the driver's `gpu_numerics.key_fields()`, whose
  matmul precision the worker then computes at, so that its records hold what their keys say."""
  from jaxleak import compile_cache, gpu_numerics
  gpu_numerics.configure(gpu_determinism_on)
  if numerics is not None:
    import jax
    precision = numerics.get("matmul_precision", gpu_numerics.MATMUL_PRECISION)
    jax.config.update("jax_default_matmul_precision", None if precision == "default" else precision)
  if 0 < gpu_share < 1 and not gpu_numerics.backends_started():
    # JAX takes 75 % of a GPU's memory per process: two groups on one GPU would each ask for it.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.75 * gpu_share:.3f}")
  compile_cache.configure(cache)                                 # off where the worker cannot write there


def _run_group(study_json: dict, group_key: str, root: str, chunk_size: Optional[int] = None,
               setup: Optional[dict] = None) -> tuple[int, bool]:
  """One group, run in a Ray worker: the plan is rebuilt from the study config, so only names travel. `setup`:
  `_set_up_worker`'s arguments. Returns (records written, whether another process was running the group, so that
  this one skipped it)."""
  if setup is not None:
    _set_up_worker(**setup)
  from jaxleak.runs.study import engine, spec
  from jaxleak.runs.study.plan import make_plan
  numerics = None if setup is None else setup.get("numerics")
  plan = make_plan(spec.from_json(study_json), check_inputs=False, numerics=numerics)
  groups = tuple(g for g in plan.groups if g.key == group_key)
  if not groups:                                   # else 0 records, silently
    import jaxleak
    raise ValueError(f"group {group_key}: not in the plan this worker made of the study (jaxleak "
                     f"{jaxleak.__version__} here); "
                     "the driver and the workers must run the same jaxleak and jax versions.")
  summary = engine.run_plan(Plan(plan.study, groups), Store(root), progress=None, chunk_size=chunk_size)
  return summary.tasks_written, bool(summary.groups_busy)


def run_with_ray(plan: Plan, store: Store, *, address: Optional[str] = None, num_cpus: Optional[int] = None,
                 progress: Optional[Callable[[str], None]] = print, chunk_size: Optional[int] = None,
                 gpus: Optional[float] = None) -> int:
  """Runs every pending group of `plan` as one Ray task (one CPU and `gpus_per_task(gpus, ...)` GPUs each); returns
  the records written. chunk_size: as `engine.run_plan`'s, in every task."""
  ray = require_ray()
  check_address(address)
  import jax
  from jaxleak import gpu_numerics
  from jaxleak.runs.study import spec
  log = progress or (lambda m: None)
  done = store.done_keys(t.key for t in plan.tasks)
  pending = [g for g in plan.groups if any(t.key not in done for t in g.tasks)]
  started_here = not ray.is_initialized()
  if started_here:
    try:
      ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
               log_to_driver=False, ignore_reinit_error=True)
    except (ConnectionError, RuntimeError) as e:
      # Found 2026-12-07: Ray 2.60's token authentication refused a driver given the head's address (its token not
      # found; `auto` found it), and ray.init ended, after a minute of retries, in a ConnectionError traceback.
      first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
      where = f"--ray_address {_shown(address)[0]}: Ray could not join the cluster there" if address else \
          ("Ray could not join the cluster in $RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else
           "Ray could not join a cluster started on this machine, or start one")
      raise ValueError(f"{where} (Ray: {first}). Check the address (`ray status` on the head node prints it, or "
                       "give --ray_address=auto on a node of the cluster) and, where the cluster uses token "
                       "authentication, that this machine has its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token: "
                       "https://docs.ray.io/en/latest/ray-security/token-auth.html). Nothing was run.") from None
  try:
    share = gpus_per_task(gpus, [n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")])
    remote = ray.remote(num_cpus=1, num_gpus=share)(_run_group)
    study_json = spec.to_json(plan.study)
    setup = {"gpu_share": share, "cache": jax.config.jax_compilation_cache_dir,
             "gpu_determinism_on": gpu_numerics.determinism_wanted(),   # the driver's choice (flag or variable)
             "numerics": gpu_numerics.key_fields()}                     # the plan's keys were made with these
    refs = {remote.remote(study_json, g.key, store.root, chunk_size, setup): g for g in pending}
    each = f"{share:g} GPU and 1 CPU each" if share else "1 CPU each (no GPU on the cluster, or no GPU asked for)"
    groups = f"{len(pending)} group{'s' if len(pending) != 1 else ''}"
    log(f"ray: {groups} submitted ({len(plan.groups) - len(pending)} already done), {each}")
    written, failed, remaining = 0, [], list(refs)
    while remaining:
      ready, remaining = ray.wait(remaining, num_returns=1)
      group = refs[ready[0]]
      try:
        n, busy = ray.get(ready[0])
        written += n
        what = "being run by another process; skipped" if busy else "done"
        log(f"  group {what} [{group.label}]; {len(refs) - len(remaining)}/{len(refs)}")
      except Exception as e:                                        # a worker failed: report, keep the others
        failed.append((group.label, failure_reason(e)))
        log(f"  group failed [{group.label}]: {failed[-1][1]}; {len(refs) - len(remaining)}/{len(refs)}")
    if failed:
      raise GroupsFailed(failed)
    store.write_index(plan, store.done_keys(t.key for t in plan.tasks))
    return written
  finally:
    if started_here:
      ray.shutdown()
