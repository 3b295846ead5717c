"""Running a study's groups elsewhere: one Ray task per group (optional extra `ray`).

Every task writes its records into the study folder, so the folder must be reachable from the workers (a shared
file system on a cluster; the local disk for a local Ray). Groups are independent; a group that fails is reported
and the rest still finish; rerunning the command resumes as with the local executor.
"""
from __future__ import annotations

import socket
from typing import Callable, Optional

from jaxleak.runs.study.plan import Plan
from jaxleak.runs.study.store import Store


def require_ray():
  try:
    import ray
  except ImportError:
    raise ImportError("--executor=ray needs Ray: pip install 'jaxleak[ray]' (or pip install ray).") from None
  return ray


def check_address(address: Optional[str], timeout_s: float = 5.0) -> None:
  """Raises ValueError unless something answers at a Ray cluster address 'host:port' or 'ray://host:port' (a TCP
  connection within `timeout_s`). None and 'auto' (Ray finds the cluster itself) are not checked. Without this,
  ray.init waits about a minute on a wrong address and then fails in Ray's words."""
  if address is None or address == "auto":
    return
  hostport = address.split("://", 1)[1] if "://" in address else address
  host, _, port = hostport.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"--ray_address {address!r}: expected host:port (e.g. 10.0.0.1:6379, the head node's "
                     "`ray start --head` address), ray://host:10001 or auto.")
  try:
    socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
  except OSError as e:
    reason = e.strerror or type(e).__name__
    raise ValueError(f"--ray_address {address}: nothing answers at {host}:{port} ({reason.lower()}); start the "
                     "cluster there (ray start --head) or check the address. Nothing was run.") from None


def _run_group(study_json: dict, group_key: str, root: str, chunk_size: Optional[int] = None) -> tuple[int, bool]:
  """One group, run in a Ray worker: the plan is rebuilt from the study config, so only names travel. Returns
  (records written, whether another process was running the group, so that this one skipped it)."""
  from jaxleak.runs.study import engine, spec
  from jaxleak.runs.study.plan import make_plan
  plan = make_plan(spec.from_json(study_json), check_inputs=False)
  groups = tuple(g for g in plan.groups if g.key == group_key)
  summary = engine.run_plan(Plan(plan.study, groups), Store(root), progress=None, chunk_size=chunk_size)
  return summary.tasks_written, bool(summary.groups_busy)


def run_with_ray(plan: Plan, store: Store, *, address: Optional[str] = None, num_cpus: Optional[int] = None,
                 progress: Optional[Callable[[str], None]] = print, chunk_size: Optional[int] = None) -> int:
  """Runs every pending group of `plan` as one Ray task (num_cpus=1 each); returns the records written.
  chunk_size: as `engine.run_plan`'s, in every task."""
  ray = require_ray()
  check_address(address)
  from jaxleak.runs.study import spec
  log = progress or (lambda m: None)
  done = store.done_keys(t.key for t in plan.tasks)
  pending = [g for g in plan.groups if any(t.key not in done for t in g.tasks)]
  started_here = not ray.is_initialized()
  if started_here:
    ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
             log_to_driver=False, ignore_reinit_error=True)
  try:
    remote = ray.remote(num_cpus=1)(_run_group)
    study_json = spec.to_json(plan.study)
    refs = {remote.remote(study_json, g.key, store.root, chunk_size): g for g in pending}
    log(f"ray: {len(pending)} groups submitted ({len(plan.groups) - len(pending)} already done)")
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
        failed.append((group.label, e))
    if failed:
      raise RuntimeError(f"{len(failed)} group(s) failed on Ray, e.g. [{failed[0][0]}]: {failed[0][1]}; rerun to "
                         "retry them (finished groups are kept).")
    store.write_index(plan, store.done_keys(t.key for t in plan.tasks))
    return written
  finally:
    if started_here:
      ray.shutdown()
