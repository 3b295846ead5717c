"""The one module that writes and reads durable files.

Three kinds of thing, each written so that a kill -9 at any moment leaves either the old version or the new one,
never a mix or a half-written file:

* single files (`write_text`, `write_bytes`, `write_json`, `write_csv`): a temp file in the same folder, fsynced,
  then `os.replace`;
* folders (`commit_folder`): every file written into a hidden sibling folder, which then replaces the target in
  two renames; `recover_folder` (called by every commit) finishes or undoes an interrupted swap. A folder is
  replaced only when that deletes nothing jaxleak did not write there (`check_replaceable_folder`: each committed
  folder lists its files in `FOLDER_MARKER`), so `--output_dir=.` cannot delete a project;
* checkpoints (`Checkpointer`): ONE self-verifying file: a magic line, a JSON header (format, fingerprint and the
  configuration it was computed from, caller metadata, the payload's length and SHA-256) and a msgpack payload
  (flax.serialization; never pickle). Loading verifies length and checksum, then the fingerprint: a checkpoint
  written by another configuration is refused with a message that names the fields that differ.

One resume scheme for every long run (fold training, Eavesdrop rounds, Whole Determination trials):

  >>> import tempfile, os, numpy as np
  >>> ckpt = Checkpointer(os.path.join(tempfile.mkdtemp(), "run.ckpt"), {"lr": 0.1}, what="demo run")
  >>> ckpt.restore({"w": np.zeros(2)}) is None            # nothing yet: start from scratch
  True
  >>> ckpt.save({"w": np.ones(2)}, {"steps_done": 3})
  >>> state, meta = ckpt.restore({"w": np.zeros(2)})
  >>> state["w"].tolist(), meta["steps_done"]
  ([1.0, 1.0], 3)
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import functools
import glob
import hashlib
import io
import itertools
import json
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
import uuid
from typing import Any, Collection, Iterable, Mapping, Optional, Sequence

import numpy as np

_MAGIC = b"JAXLEAK-CHECKPOINT v1\n"
_MAX_HEADER_BYTES = 16 * 2 ** 20            # a header is JSON metadata; anything larger is not ours


class StorageError(ValueError):
  """A durable file is missing, corrupt, or was written by something else. The message names the file and the fix."""


def _refused_write(e: OSError, path: str) -> Optional[StorageError]:
  """The StorageError for a write the file system refused for a reason the user can fix (full, over quota,
  read-only, a name too long); None for any other OSError, which propagates as it is."""
  if e.errno == errno.ENOSPC:
    problem, fix = "no space is left on the device", "free space there, or write elsewhere,"
  elif e.errno == errno.EDQUOT:
    problem, fix = "the disk quota is used up", "free space there, or write elsewhere,"
  elif e.errno == errno.EROFS:
    problem, fix = "the file system is read-only", "write elsewhere"
  elif e.errno == errno.ENAMETOOLONG:
    problem, fix = "a name in the path is too long for this file system", "choose a shorter folder or file name"
  else:
    return None
  return StorageError(f"writing {path}: {problem}. Nothing was half written and whatever was stored before is kept; "
                      f"{fix} and run the same command again.")


@contextlib.contextmanager
def _writing(path: str):
  """Turns the file system's fixable refusals of a write under `path` into a StorageError (see `_refused_write`)."""
  try:
    yield
  except OSError as e:
    refused = _refused_write(e, path)
    if refused is None:
      raise
    raise refused from e


class CheckpointMismatch(StorageError):
  """A checkpoint was written by another configuration; the message names the fields that differ."""


# --- single files -------------------------------------------------------------------------------------------------

def _fsync_dir(folder: str) -> None:
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:                                    # some file systems do not open folders: nothing to sync
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (temp file in the same folder, fsync, os.replace)."""
  if os.path.isdir(path):
    raise IsADirectoryError(f"{path} is a folder; give a file path there (nothing was written).")
  folder = os.path.dirname(os.path.abspath(path))
  with _writing(path):
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
      with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.unlink(tmp)
      raise
  _fsync_dir(folder)


def write_text(path: str, text: str) -> None:
  """Writes UTF-8 `text` to `path` atomically."""
  write_bytes(path, text.encode("utf-8"))


def _json_value(o):
  """NumPy (and JAX) numbers and arrays as the JSON numbers and lists they hold (before: strings, "1.5" and
  "[0 1 2]", which read back as text); anything else that JSON lacks as its str()."""
  if isinstance(o, (np.generic, np.ndarray)) or type(o).__module__.startswith(("jax", "jaxlib")):
    try:
      return np.asarray(o).tolist()
    except Exception:                        # a traced or otherwise opaque array: its str() as before
      pass
  return str(o)


def json_text(obj) -> str:
  """Canonical JSON as jaxleak writes it (indented, sorted keys; NumPy/JAX numbers and arrays as numbers and lists,
  other non-JSON values as strings)."""
  return json.dumps(obj, indent=2, sort_keys=True, default=_json_value) + "\n"


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
  """A CSV table; every row has one value per header column (a short or long row is a ValueError, not a file whose
  columns shift)."""
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(header)
  for i, row in enumerate(rows):
    row = list(row)
    if len(row) != len(header):
      raise ValueError(f"CSV row {i} has {len(row)} values for {len(header)} columns {list(header)}; nothing was "
                       "written.")
    w.writerow(row)
  return buf.getvalue()


def write_json(path: str, obj) -> None:
  write_text(path, json_text(obj))


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> None:
  write_text(path, csv_text(header, rows))


def read_json(path: str, what: str = "file"):
  """The JSON value in `path`; FileNotFoundError or StorageError naming the file and what to do."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such {what}.")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise StorageError(f"{path}: not a readable JSON {what} ({e}); rerun the command that wrote it.") from None


def read_csv(path: str, required: Sequence[str] = (), what: str = "file") -> list[dict]:
  """The rows of a CSV file written by jaxleak as dicts of strings; StorageError when it is malformed or lacks a
  `required` column."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such {what}.")
  try:
    with open(path, encoding="utf-8", newline="") as f:
      reader = csv.DictReader(f)
      rows = list(reader)
      header = reader.fieldnames or []
  except (UnicodeDecodeError, csv.Error) as e:
    raise StorageError(f"{path}: not a readable CSV {what} ({e}); rerun the command that wrote it.") from None
  missing = [c for c in required if c not in header]
  if missing or any(None in r or None in r.values() for r in rows):
    raise StorageError(f"{path}: malformed {what} (" + (f"missing columns {missing}" if missing else
                                                       "rows of the wrong length") + "); rerun the command "
                       "that wrote it.")
  return rows


# --- folders ------------------------------------------------------------------------------------------------------

def _siblings(path: str, kind: str) -> list[str]:
  parent, name = os.path.split(os.path.abspath(path))
  return sorted(glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.{kind}-*")))


def recover_folder(path: str) -> None:
  """Finishes what an interrupted `commit_folder` left: if the target is missing but the old version was moved
  aside, the old version is restored (the new one never became visible); leftover temp folders are removed."""
  old = _siblings(path, "old")
  if old and not os.path.exists(path):
    os.rename(old[-1], path)
    old = old[:-1]
  for leftover in old + _siblings(path, "tmp"):
    shutil.rmtree(leftover, ignore_errors=True)


#: Written into every folder `commit_folder` writes: the files it holds (JSON), so that a later commit replaces the
#: folder only when that deletes nothing else.
FOLDER_MARKER = ".jaxleak-folder.json"


def _marker_files(folder: str) -> Optional[set]:
  """The files `FOLDER_MARKER` in `folder` lists, or None (no marker, or not a readable one)."""
  try:
    with open(os.path.join(folder, FOLDER_MARKER), encoding="utf-8") as f:
      return {str(x) for x in json.load(f)["files"]}
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _unlisted_files(path: str) -> Iterable[str]:
  """Files (and links) under `path` that no `FOLDER_MARKER` of their folder or of a folder above lists, as paths
  relative to `path`; lazily, so a large folder is not walked to its end. (A report written inside a run's folder
  is listed by its own marker.)"""
  allowed = set()
  for root, _, files in os.walk(path):
    rel = os.path.relpath(root, path)
    prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
    if FOLDER_MARKER in files:
      allowed |= {prefix + f for f in (_marker_files(root) or ())}
    for f in sorted(files):
      if f != FOLDER_MARKER and prefix + f not in allowed:
        yield prefix + f


def check_replaceable_folder(path: str, what: str = "output folder") -> None:
  """Raises StorageError (naming the path, a few of the files and the fix) unless `commit_folder` may replace the
  folder at `path` without deleting anything jaxleak did not write there: it is missing or empty, or every file in
  it is listed by a `FOLDER_MARKER` (a folder jaxleak committed, and folders it committed inside). Cheap; for
  checks before any work."""
  if not os.path.isdir(path):
    return
  extra = list(itertools.islice(_unlisted_files(path), 4))
  if not extra:
    return
  shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
  if _marker_files(path) is None:
    raise StorageError(f"{what} {path} already exists and is not a folder jaxleak wrote whole (it holds {shown}); "
                       f"writing there would replace it and delete them. Choose a new or empty folder (a result "
                       f"folder of a jaxleak older than 2026-12-04 has no {FOLDER_MARKER}: delete it first).")
  raise StorageError(f"{what} {path} holds files jaxleak did not write there ({shown}); writing there would replace "
                     "the folder whole and delete them. Move them out, or choose another folder.")


def _inside(rel: str) -> bool:
  """True when `rel` is a relative path that stays inside its folder."""
  return bool(rel) and not os.path.isabs(rel) and ".." not in rel.replace(os.sep, "/").split("/")


def commit_folder(path: str, files: Mapping[str, str | bytes]) -> None:
  """Writes a folder whole or not at all, replacing the folder at `path` if `check_replaceable_folder` allows it
  (else StorageError, nothing changed). The folder gets `FOLDER_MARKER` listing its files.

  Args:
    path: the folder to (re)place.
    files: relative path (may contain '/') -> text or bytes.
  """
  path = os.path.abspath(path)
  for rel in files:
    if not _inside(rel) or rel == FOLDER_MARKER:
      raise ValueError(f"commit_folder: {rel!r} is not a relative path inside the folder (or is the marker).")
  parent, name = os.path.split(path)
  with _writing(path):
    os.makedirs(parent, exist_ok=True)
  if os.path.exists(path) and not os.path.isdir(path):
    raise StorageError(f"{path} exists and is not a folder; choose another output folder.")
  recover_folder(path)
  check_replaceable_folder(path, "folder")
  encoded = {rel: content.encode("utf-8") if isinstance(content, str) else content for rel, content in files.items()}
  marker = {"written_by": "jaxleak", "files": sorted(files),
            "sha256": {rel: hashlib.sha256(encoded[rel]).hexdigest() for rel in sorted(files)}}
  files = {**encoded, FOLDER_MARKER: json_text(marker).encode("utf-8")}
  tmp = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:12]}")
  with _writing(path):
    os.makedirs(tmp)
  try:
    for rel, content in files.items():
      target = os.path.join(tmp, rel)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with open(target, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(path):
      old = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex[:12]}")
      os.rename(path, old)
      os.rename(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, path)
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    recover_folder(path)
    if isinstance(e, OSError) and e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT) and os.path.isdir(path):
      # Another process committed this folder between our check and our rename (two runs, one output folder).
      raise StorageError(f"{path} was written by another process at the same moment (two runs with one output "
                         "folder?): it holds one version whole (the other run's, or the one before), not this "
                         "run's. Rerun this one with its own output folder, or after the other has finished.") from None
    refused = _refused_write(e, path) if isinstance(e, OSError) else None
    if refused is not None:
      raise refused from e
    raise
  _fsync_dir(parent)


def verify_folder(path: str) -> bool:
  """Checks the files of a folder `commit_folder` wrote against the checksums in its `FOLDER_MARKER`: raises
  StorageError naming the first file that is missing or changed since, and the fix. Returns False, checking
  nothing, for a folder with no checksums (written by hand, or by a jaxleak older than 2026-12-04's fourteenth
  session), True when every listed file matches."""
  try:
    with open(os.path.join(path, FOLDER_MARKER), encoding="utf-8") as f:
      sums = json.load(f).get("sha256")
  except FileNotFoundError:
    return False
  except (OSError, ValueError, AttributeError) as e:
    raise StorageError(f"{path}/{FOLDER_MARKER}: not a readable folder marker ({e}); rerun the command that wrote "
                       "the folder.") from None
  if sums is None:
    return False
  if not isinstance(sums, dict) or not all(isinstance(r, str) and _inside(r) for r in sums):
    raise StorageError(f"{path}/{FOLDER_MARKER}: malformed checksums (or a listed path outside the folder); rerun "
                       "the command that wrote the folder.")
  for rel, expected in sorted(sums.items()):
    try:
      with open(os.path.join(path, rel), "rb") as f:
        actual = hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
      raise StorageError(f"{path}/{rel}: listed in {FOLDER_MARKER} but cannot be read ({e.strerror or e}): "
                         "deleted or damaged. Rerun the command that wrote the folder.") from None
    if actual != expected:
      raise StorageError(f"{path}/{rel} has changed since jaxleak wrote it (its checksum differs from the one in "
                         f"{FOLDER_MARKER}): damaged or edited. Rerun the command that wrote the folder.")
  return True


# --- claims -------------------------------------------------------------------------------------------------------

class Busy(RuntimeError):
  """Another process holds the claim (see `claim`); `holder` says which ('<host> pid <pid>')."""

  def __init__(self, path: str, holder: str):
    super().__init__(f"{path} is held by another process ({holder})")
    self.holder = holder


#: What a non-blocking flock answers when another open file holds the lock.
_HELD_ELSEWHERE = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


@contextlib.contextmanager
def claim(path: str, *, wait: bool = False):
  """Holds an exclusive advisory lock on the file `path` for the `with` block, so that processes sharing a folder
  do not do the same work twice. Raises Busy at once when another process holds it (with `wait`: waits until it
  is released instead); the kernel releases it when its holder ends, kill -9 included, so a claim is never left
  stale. Yields True, or False on a file system without locks (some network mounts), where nothing is excluded
  and the caller's work is merely not shared.

  While held, the file names its holder ('<host> pid <pid>', for `claim_holder`). It is left in place afterwards
  (removing it would let two processes lock two different files of one name).

  >>> import tempfile, os
  >>> path = os.path.join(tempfile.mkdtemp(), "group.lock")
  >>> with claim(path) as held:
  ...   print(held, is_claimed(path))
  True True
  >>> is_claimed(path)
  False
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
      held = True
    except OSError as e:
      if e.errno in _HELD_ELSEWHERE:
        raise Busy(path, _read_holder(fd) or "holder unknown") from None
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        raise
      held = False
    if held:                                         # who holds it, for `claim_holder` (status lines); not data
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{platform.node() or 'this machine'} pid {os.getpid()}\n".encode("utf-8"), 0)
    yield held
  finally:
    os.close(fd)                                     # closing the descriptor releases the lock


@contextlib.contextmanager
def exclusive_run(checkpoint_path: str, what: str = "run"):
  """Claims the resumable run behind `checkpoint_path` for the `with` block (a lock under `.claims/` beside it):
  two processes running it at once would each save their own progress over the other's. A second one is refused
  at once (StorageError naming the holder); the claim ends with its holder, kill -9 included. Once claimed, the
  temporary files of this checkpoint that earlier holders left when stopped mid-write (kill -9, SIGTERM) are
  deleted: only the claim's holder writes them, so they are nobody's now (a whole checkpoint each)."""
  folder, name = os.path.split(os.path.abspath(checkpoint_path))
  with contextlib.ExitStack() as stack:
    try:
      held = stack.enter_context(claim(os.path.join(folder, ".claims", name + ".lock")))
    except Busy as e:
      raise StorageError(f"{checkpoint_path}: another process ({e.holder}) is running this {what} now; let it "
                         "finish (running the command again afterwards resumes from its checkpoint), or give this "
                         "one another output or checkpoint folder.") from None
    if held:
      delete_stopped_writes(folder, {name})
    yield held


_STOPPED_WRITE = re.compile(r"\.tmp-[a-z0-9_]{8}-(.+)\Z")


def delete_stopped_writes(folder: str, names: Collection[str]) -> int:
  """Deletes `write_bytes`' temporary files of `folder/<name>` for each of `names` (".tmp-<8 random
  characters>-<name>", tempfile's names) and returns how many. Only for files whose writers hold a claim (the
  caller holds it now): elsewhere a temporary file may be a live process's write."""
  try:
    entries = os.listdir(folder)
  except OSError:
    return 0
  deleted = 0
  for entry in entries:
    left = _STOPPED_WRITE.match(entry)
    if left and left.group(1) in names:
      try:
        os.unlink(os.path.join(folder, entry))
        deleted += 1
      except OSError:                                # gone already, or not ours to delete: harmless
        pass
  return deleted


def resume_folder(output_dir: str) -> str:
  """Where a run that writes `output_dir` whole (`commit_folder`) keeps the checkpoints that make it resumable: the
  hidden sibling `.<name>.resume` (beside the folder, as its staged copy is: the folder is replaced when the run
  commits). `delete_resume_folder` once the results are written."""
  parent, name = os.path.split(os.path.abspath(output_dir))
  return os.path.join(parent, f".{name}.resume")


def delete_resume_folder(path: str) -> None:
  """Deletes a run's resume folder (`resume_folder`) once its results are written: each checkpoint there that no
  process runs now (its claim taken here first), with its stopped writes and its lock file, then the folder if
  that leaves it empty. A checkpoint another process is running stays, and so does the folder."""
  try:
    entries = os.listdir(path)
  except OSError:
    return
  with contextlib.suppress(OSError):              # claims of runs that stopped before their first save, too
    entries += [e[:-len(".lock")] for e in os.listdir(os.path.join(path, ".claims")) if e.endswith(".ckpt.lock")]
  for entry in sorted(set(entries)):
    if entry.startswith(".") or not entry.endswith(".ckpt"):
      continue
    lock = os.path.join(path, ".claims", entry + ".lock")
    try:
      with claim(lock):
        delete_stopped_writes(path, {entry})
        for done in (os.path.join(path, entry), lock):
          with contextlib.suppress(FileNotFoundError):
            os.unlink(done)
    except Busy:
      continue
  for folder in (os.path.join(path, ".claims"), path):
    with contextlib.suppress(OSError):             # not empty (a checkpoint still running, a file not ours): kept
      os.rmdir(folder)


def _read_holder(fd: int) -> str:
  try:
    return os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
  except OSError:
    return ""


def claim_holder(path: str) -> Optional[str]:
  """Who holds the claim on `path` now ('<host> pid <pid>', or 'holder unknown'), None when nobody does (a
  snapshot; for progress reports)."""
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:                                    # no claim file (never claimed), or not ours to read
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return None
  except OSError as e:
    if e.errno not in _HELD_ELSEWHERE:
      return None
    return _read_holder(fd) or "holder unknown"
  finally:
    os.close(fd)


def is_claimed(path: str) -> bool:
  """True when another process holds the claim on `path` now (a snapshot; for progress reports)."""
  return claim_holder(path) is not None


#: How much longer than a folder's name are the names `commit_folder` writes it through (".<name>.tmp-<12 hex>").
_STAGED_NAME_EXTRA = len(".") + len(".tmp-") + 12


def _name_max(folder: str) -> int:
  try:
    return int(os.pathconf(folder, "PC_NAME_MAX"))
  except (OSError, ValueError):                      # not reported: the usual limit
    return 255


def check_writable_folder(path: str, what: str = "output folder") -> None:
  """Refuses, before any work, a folder that cannot be created or written (names the path and the fix)."""
  probe_parent = os.path.abspath(path)
  while not os.path.exists(probe_parent):
    probe_parent = os.path.dirname(probe_parent)
  if not os.path.isdir(probe_parent):
    raise StorageError(f"{what} {path}: {probe_parent} is a file, not a folder; choose another path.")
  parts = os.path.relpath(os.path.abspath(path), probe_parent).split(os.sep)
  name_max = _name_max(probe_parent)
  for i, part in enumerate(parts):
    last = i == len(parts) - 1
    if part != "." and len(part) + (_STAGED_NAME_EXTRA if last else 0) > name_max:
      staged = f", and jaxleak writes a folder through a name {_STAGED_NAME_EXTRA} characters longer" if last else ""
      raise StorageError(f"{what} {path}: the name {part[:20]}... has {len(part)} characters; this file system "
                         f"allows {name_max}{staged}. Choose a shorter name.")
  # os.access passes for root where nothing can be created (/proc), and where it fails it has no reason to give (a
  # read-only mount read "permission denied"): an unnamed temporary file is the real test, leaving nothing behind.
  try:
    with tempfile.TemporaryFile(dir=probe_parent):
      pass
  except OSError as e:
    reason = e.strerror or type(e).__name__
    raise StorageError(f"{what} {path}: no file can be created in {probe_parent} ({reason.lower()}); choose a "
                       f"folder you can write to.") from None


# --- fingerprints and checkpoints ---------------------------------------------------------------------------------

def _canonical(obj, path: str = "config"):
  """A JSON-able, order-independent form of a configuration (floats kept exactly; NaN/inf as strings).

  Configurations hold JSON values (mappings, lists/tuples, str, bool, int, float, None) and NumPy scalars (taken
  as the Python value). Anything else raises TypeError: its text could be unstable between processes (a set's
  order, an object's address) or lossy (an array's summary), and a fingerprint must not be."""
  try:
    return _canonical_value(obj)
  except _NotJson as e:
    where = path + "".join(reversed(e.where))
    raise TypeError(f"{where}: a configuration holds JSON values (dicts, lists, str, bool, int, float, None); got "
                    f"{type(e.value).__name__} {e.value!r:.60}. Convert it (e.g. a set to a sorted list) before "
                    "fingerprinting.") from None


class _NotJson(Exception):
  """A value `_canonical` refuses; `where` collects its path from the inside out."""

  def __init__(self, value):
    super().__init__()
    self.value, self.where = value, []


def _canonical_value(obj):
  # The exact JSON types first (a study plans 10^4-10^5 task configurations; an isinstance against the Mapping ABC
  # and a path string per value made that seconds), then the general cases.
  kind = type(obj)
  if obj is None or kind is str or kind is bool or kind is int:
    return obj
  if kind is float:
    return obj if math.isfinite(obj) else repr(obj)
  if isinstance(obj, Mapping):
    out = {}
    for k, v in sorted(obj.items(), key=lambda kv: str(kv[0])):
      try:
        out[str(k)] = _canonical_value(v)
      except _NotJson as e:
        e.where.append(f".{k}")
        raise
    return out
  if isinstance(obj, (list, tuple)):
    out = []
    for i, v in enumerate(obj):
      try:
        out.append(_canonical_value(v))
      except _NotJson as e:
        e.where.append(f"[{i}]")
        raise
    return out
  if isinstance(obj, np.generic) and isinstance(obj.item(), (bool, int, float, str)):
    obj = obj.item()
  if isinstance(obj, float):
    return repr(obj) if not math.isfinite(obj) else obj
  if isinstance(obj, (bool, int, str)):
    return obj
  raise _NotJson(obj)


def fingerprint(config: Mapping[str, Any]) -> str:
  """SHA-256 (hex, 16 digits) of the canonical JSON of `config`: equal configurations, equal fingerprints."""
  blob = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
  """Human-readable differences 'field: stored X, now Y' between two configurations (nested dicts flattened)."""
  stored, current = _canonical(stored), _canonical(current)
  out = []
  for k in sorted(set(stored) | set(current)):
    a, b = stored.get(k, "<absent>"), current.get(k, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      out += config_differences(a, b, f"{prefix}{k}.")
    elif a != b:
      out.append(f"{prefix}{k}: stored {_short(a)}, now {_short(b)}")
  return out


def _short(value: Any, limit: int = 80) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit - 4] + " ..."


def _encode_payload(state) -> bytes:
  if state is None:
    return b""
  from flax import serialization
  return serialization.msgpack_serialize(serialization.to_state_dict(state))


def read_checkpoint_header(path: str) -> dict:
  """The JSON header of a checkpoint file (format, fingerprint, config, meta), verified to be ours."""
  header, _ = _read_checkpoint(path, verify_payload=False)
  return header


def _read_checkpoint(path: str, verify_payload: bool = True) -> tuple[dict, bytes]:
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  if not os.path.isfile(path):
    raise StorageError(f"checkpoint {path} is not a regular file; point the run at another folder.")
  with open(path, "rb") as f:
    magic = f.read(len(_MAGIC))
    if magic != _MAGIC:
      raise StorageError(f"{path} is not a jaxleak checkpoint (or one written by an older version); delete it or "
                         "use another folder to start over.")
    line = f.readline(_MAX_HEADER_BYTES + 1)
    if len(line) > _MAX_HEADER_BYTES or not line.endswith(b"\n"):
      raise StorageError(f"{path}: checkpoint header is truncated or oversized; the file is damaged. Delete it to "
                         "start over.")
    try:
      header = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
      raise StorageError(f"{path}: checkpoint header is not valid JSON; the file is damaged. Delete it to start "
                         "over.") from None
    if not verify_payload:
      return header, b""
    payload = f.read(int(header.get("payload_bytes", -1)) + 1)
  if len(payload) != header.get("payload_bytes") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
    raise StorageError(f"{path}: checkpoint payload fails its checksum (truncated or altered on disk); delete it to "
                       "start over.")
  return header, payload


class Checkpointer:
  """One resumable run's checkpoint: a single self-verifying file, tied to the configuration that produced it.

  Args:
    path: the checkpoint file.
    config: everything that determines the run's results except how far it has got (e.g. without `epochs`
      or `rounds`, so that extending a run resumes it). Stored in the header; its fingerprint is checked on load.
    what: a few words for messages ('fold training', 'Eavesdrop rounds').
  """

  def __init__(self, path: str, config: Mapping[str, Any], *, what: str = "run"):
    self.path = path
    self.config = dict(_canonical(config))
    self.fingerprint = fingerprint(self.config)
    self.what = what

  def exists(self) -> bool:
    return os.path.exists(self.path)

  def save(self, state, meta: Optional[Mapping[str, Any]] = None) -> None:
    """Writes state (any pytree of arrays, or None) and JSON metadata atomically, as one file."""
    payload = _encode_payload(state)
    header = {"format": "jaxleak-checkpoint", "version": 1, "what": self.what, "fingerprint": self.fingerprint,
              "config": self.config, "meta": dict(meta or {}), "payload_bytes": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest()}
    line = json.dumps(header, sort_keys=True, default=str).encode("utf-8") + b"\n"
    write_bytes(self.path, _MAGIC + line + payload)

  def restore(self, target=None):
    """(state restored into the structure of `target`, meta), or None when there is no checkpoint yet.

    Raises CheckpointMismatch (naming the differing fields) for a checkpoint of another configuration and
    StorageError for a damaged one.
    """
    if not self.exists():
      return None
    header, payload = _read_checkpoint(self.path)
    if header.get("fingerprint") != self.fingerprint:
      diff = config_differences(header.get("config", {}), self.config)
      raise CheckpointMismatch(
          f"{self.path} is a checkpoint of {header.get('what', 'a run')} with another configuration ("
          + ("; ".join(diff[:8]) + ("; ..." if len(diff) > 8 else "") if diff else "fingerprints differ")
          + "); rerun with the same settings to resume, or use another folder (or delete it) to start over.")
    state = None
    if target is not None:
      from flax import serialization
      try:
        state = serialization.from_state_dict(target, serialization.msgpack_restore(payload))
      except (ValueError, KeyError, TypeError) as e:
        raise StorageError(f"{self.path}: checkpoint does not fit this model ({e}); delete it or use another "
                           "folder.") from None
      wrong = _shape_mismatches(target, state)
      if wrong:
        raise StorageError(f"{self.path}: checkpoint does not fit this model ({'; '.join(wrong[:4])}"
                           + ("; ..." if len(wrong) > 4 else "") + "); delete it or use another folder.")
    return state, header.get("meta", {})


def _shape_mismatches(target, state) -> list[str]:
  """'path: stored shape, expected shape' for every array leaf of `target` (arrays or jax.ShapeDtypeStruct) whose
  restored value has another shape (flax's from_state_dict restores whatever was stored)."""
  import jax
  out = []

  def check(path, t, s):
    if hasattr(t, "shape") and tuple(np.shape(s)) != tuple(t.shape):
      out.append(f"{jax.tree_util.keystr(path)}: stored {tuple(np.shape(s))}, expected {tuple(t.shape)}")
  jax.tree_util.tree_map_with_path(check, target, state, is_leaf=lambda x: x is None)   # None: restored as stored
  return out


# --- provenance ---------------------------------------------------------------------------------------------------

def provenance() -> dict:
  """Versions, devices and the code revision, for manifests and records (off the CPU also the float32 matmul
  precision, and on a GPU whether XLA was asked for deterministic kernels: `jaxleak.gpu_numerics`)."""
  import flax
  import jax
  import optax

  import jaxleak
  env = {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
         "optax": optax.__version__, "numpy": np.__version__, "jaxleak": jaxleak.__version__,
         "platform": platform.platform(), "devices": [str(d) for d in jax.devices()]}
  if jax.default_backend() != "cpu":         # what XLA:CPU always does, accelerators only if asked (gpu_numerics)
    env["matmul_precision"] = str(jax.config.jax_default_matmul_precision or "default")
  if jax.default_backend() == "gpu":
    from jaxleak import gpu_numerics
    env["xla_gpu_deterministic"] = bool(gpu_numerics.requested())
  commit = _git_commit()
  if commit is not None:
    env["git_commit"] = commit
  return env


@functools.lru_cache(maxsize=1)
def _git_commit() -> Optional[str]:
  """The checkout's HEAD when this process first asked (the code it imported then), or None outside a checkout.
  Asked once: a study writes a record per task, and `git` cost ~1.4 ms a record (2026-12-06)."""
  try:
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                          check=True).stdout.strip()
  except Exception:                                             # not a checkout: no commit to record
    return None
