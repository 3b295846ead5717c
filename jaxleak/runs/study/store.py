"""A study's results store: one folder per study, one self-verifying record per task, keyed by the task's
configuration fingerprint (writes go through jaxleak.storage).

  <study_dir>/study.json          the folder's study (status/collect read it; engine.adopt_folder)
  <study_dir>/records/<key>.json  one record per task: config, seed, results, versions, code revision, checksum
  <study_dir>/timings/<key>.json  wall times of the task's group (kept apart so records are bitwise reproducible)
  <study_dir>/index.json          key -> group, kind, settings (derived; rebuilt from the records)
  <study_dir>/checkpoints/        in-task checkpoints of long tasks (Eavesdrop rounds)
  <study_dir>/.claims/<group>     lock files: the group a process is running now, and who (storage.claim)

A record is written atomically and only after its task finished; a killed run leaves whole records or none, and
rerunning the same command skips the tasks whose records verify.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import json
import os
from typing import Optional

from jaxleak import storage


#: What a study writes at the top of its folder (the report and collect add report/ and tables/).
STUDY_ENTRIES = ("study.json", "index.json", "records", "timings", "checkpoints", "tables", "report")


class Store:
  """The study folder. read_only: a store that reads but never writes (the processes other than 0 of a
  jax.distributed run compute every group with process 0, which alone writes)."""

  def __init__(self, root: str, read_only: bool = False):
    self.root = root
    self.read_only = read_only

  def _path(self, kind: str, key: str) -> str:
    return os.path.join(self.root, kind, key + ".json")

  def has(self, key: str) -> bool:
    """True when the task's record exists and verifies (a damaged one counts as missing and is recomputed)."""
    try:
      self.read(key)
      return True
    except (FileNotFoundError, storage.StorageError):
      return False

  def done_keys(self, keys) -> set:
    return {k for k in keys if self.has(k)}

  def write(self, task, results: dict, timings: Optional[dict] = None, provenance: Optional[dict] = None) -> None:
    if self.read_only:
      return
    body = {"format": "jaxleak-study-record", "version": 1, "key": task.key, "kind": task.kind, "group": task.group,
            "config": task.config, "results": results, "provenance": provenance or _provenance()}
    body["sha256"] = _checksum(body)
    storage.write_text(self._path("records", task.key), record_text(body))
    if timings is not None:
      storage.write_json(self._path("timings", task.key), timings)

  @contextlib.contextmanager
  def writing_behind(self, depth: int = 64):
    """Yields `write` (as Store.write) that writes in one background thread, so that a record's file system work
    (two atomic writes, four fsyncs) overlaps the scoring of the next: for the thousands of records of an LDP
    sweep. At most `depth` records wait; leaving the block waits for every write, and the first that failed
    raises (the records written before it stay, whole). Each record is still written atomically on its own, so a
    kill -9 leaves whole records or none, as without this."""
    if self.read_only:
      yield lambda *args, **kwargs: None
      return
    pending: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxleak-records") as pool:
      def write(*args, **kwargs) -> None:
        while len(pending) >= depth:
          pending.popleft().result()
        pending.append(pool.submit(self.write, *args, **kwargs))
      try:
        yield write
      finally:                                   # the writes already handed over finish either way
        failed = [f.exception() for f in pending if f.exception() is not None]
      if failed:
        raise failed[0]

  def read(self, key: str) -> dict:
    """The verified record of `key`; FileNotFoundError if absent, StorageError if it fails verification."""
    path = self._path("records", key)
    if not os.path.isfile(path):
      raise FileNotFoundError(path)
    try:
      with open(path, encoding="utf-8") as f:
        body = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError):
      raise storage.StorageError(f"{path}: damaged record (not JSON); delete it and rerun to recompute.") from None
    if not isinstance(body, dict) or body.get("key") != key or body.get("sha256") != _checksum(body):
      raise storage.StorageError(f"{path}: record fails its checksum; delete it and rerun to recompute.")
    return body

  def write_study(self, study_json: dict) -> None:
    storage.write_json(os.path.join(self.root, "study.json"), study_json)

  def read_study(self) -> dict:
    path = os.path.join(self.root, "study.json")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{self.root} holds no study (no study.json); run one there first: python -m "
                              "jaxleak.study run <preset> --study_dir=...")
    try:
      with open(path, encoding="utf-8") as f:
        body = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise storage.StorageError(f"{path}: damaged (not JSON: {e}); {_REWRITE}") from None
    if not isinstance(body, dict):
      raise storage.StorageError(f"{path}: damaged (a JSON {type(body).__name__}, not a study); {_REWRITE}")
    return body

  def read_plan(self, study_json: dict | None = None):
    """The plan of the folder's study, unchecked against the data: of `study_json` when given (what `read_study`
    returned, so that both describe one reading of the file), else of study.json read now. StorageError naming the
    file and the fix when it does not describe a study this jaxleak can read."""
    from jaxleak.runs.study import spec
    from jaxleak.runs.study.plan import make_plan
    if study_json is None:
      study_json = self.read_study()
    try:
      return make_plan(spec.from_json(study_json), check_inputs=False)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
      raise storage.StorageError(f"{os.path.join(self.root, 'study.json')} does not describe a study this jaxleak "
                                 f"can read ({what}); {_REWRITE}") from None

  def check_no_foreign_files(self) -> None:
    """Raises ValueError when the folder holds entries a study does not write (a study run there would overwrite
    a file such as index.json, and mix its files with others); hidden files (temp files) are not counted."""
    if not os.path.isdir(self.root):
      return
    known = STUDY_ENTRIES if os.path.isdir(os.path.join(self.root, "records")) else ()   # else not a study at all
    foreign = sorted(e for e in os.listdir(self.root) if e not in known and not e.startswith("."))
    if foreign:
      shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
      raise ValueError(f"{self.root} holds no study but other files ({shown}); a study writes study.json, "
                       "index.json, records/ and more there: choose a new or empty --study_dir.")

  def write_index(self, plan, done: set) -> None:
    if self.read_only:
      return
    from jaxleak.runs.study.plan import task_row
    index = {t.key: {"group": t.group, "kind": t.kind, "done": t.key in done, **task_row(t)} for t in plan.tasks}
    storage.write_json(os.path.join(self.root, "index.json"), index)

  def delete_stopped_writes(self, keys) -> int:
    """Deletes the temporary files that writes of these tasks' records and timings left when their process was
    stopped mid-write (kill -9); how many. Call only while holding the claim of the tasks' group."""
    if self.read_only:
      return 0
    names = {key + ".json" for key in keys}
    return sum(storage.delete_stopped_writes(os.path.join(self.root, kind), names) for kind in ("records", "timings"))

  def checkpoint_path(self, key: str) -> str:
    return os.path.join(self.root, "checkpoints", key + ".ckpt")

  def claim_path(self, group_key: str) -> str:
    return os.path.join(self.root, ".claims", group_key + ".lock")


_REWRITE = ("rerun the `python -m jaxleak.study run ...` command that made the folder: it writes study.json again "
            "and reuses every stored record.")


def record_text(body: dict, depth: int = 4) -> str:
  """A record as JSON text: its objects down to `depth` levels one member a line (a task's config field by field,
  each attack's results a line per field), anything deeper on one line. The checksum covers the parsed content,
  not this layout. (json.dumps(indent=...) runs json's pure-Python encoder: ~0.9 ms a record, twice this.)"""
  def layout(value, depth: int, indent: str) -> str:
    if depth == 0 or not isinstance(value, dict) or not value or not all(isinstance(k, str) for k in value):
      return json.dumps(value, sort_keys=True)
    inner = indent + " "
    return "{\n" + ",\n".join(f"{inner}{json.dumps(k)}: {layout(v, depth - 1, inner)}"
                                for k, v in sorted(value.items())) + "\n" + indent + "}"
  return layout(body, depth, "") + "\n"


def _checksum(body: dict) -> str:
  rest = {k: v for k, v in body.items() if k != "sha256"}
  return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _provenance() -> dict:
  p = storage.provenance()
  return {k: p[k] for k in ("jaxleak", "jax", "flax", "optax", "numpy", "python", "git_commit") if k in p}
