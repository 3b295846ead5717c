"""jaxleak.storage: atomic files and folders, self-verifying checkpoints, refusal of other configurations,
and survival of kill -9 at random moments."""
import errno
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxleak import storage


def test_commit_folder_replaces_whole_and_leaves_no_temp(tmp_path):
  out = tmp_path / "run"
  storage.commit_folder(str(out), {"a.csv": "1\n", "sub/b.json": "{}\n"})
  storage.commit_folder(str(out), {"a.csv": "2\n"})
  assert sorted(os.listdir(out)) == [storage.FOLDER_MARKER, "a.csv"] and (out / "a.csv").read_text() == "2\n"
  assert os.listdir(tmp_path) == ["run"]
  with pytest.raises(ValueError, match="not a relative path"):
    storage.commit_folder(str(out), {"../escape": "x"})


def test_commit_folder_never_deletes_what_jaxleak_did_not_write(tmp_path):
  # Before 2026-12-04 any folder was replaced whole: `--output_dir=.` deleted the project it was run in, and a
  # report pointed at a study's records/ folder deleted the records.
  project = tmp_path / "project"
  (project / "src").mkdir(parents=True)
  (project / "src" / "thesis.tex").write_text("precious")
  with pytest.raises(storage.StorageError, match=r"is not a folder jaxleak wrote whole \(it holds src/thesis.tex\)"):
    storage.commit_folder(str(project), {"a.csv": "1\n"})
  assert (project / "src" / "thesis.tex").read_text() == "precious" and not (project / "a.csv").exists()
  assert sorted(os.listdir(tmp_path)) == ["project"]
  # A folder jaxleak wrote is replaced, whatever files the new version has; a file added to it since is kept safe.
  out = tmp_path / "run"
  storage.commit_folder(str(out), {"a.csv": "1\n", "figures/f.png": b"png"})
  storage.commit_folder(str(out), {"b.csv": "2\n"})
  (out / "notes.txt").write_text("mine")
  with pytest.raises(storage.StorageError, match=r"holds files jaxleak did not write there \(notes.txt\)"):
    storage.commit_folder(str(out), {"b.csv": "3\n"})
  assert (out / "b.csv").read_text() == "2\n" and (out / "notes.txt").read_text() == "mine"
  # A folder jaxleak committed inside it (a report inside a run's folder) is jaxleak's too.
  storage.commit_folder(str(out / "report"), {"index.html": "<html>"})
  (out / "notes.txt").unlink()
  storage.commit_folder(str(out), {"b.csv": "4\n"})
  assert sorted(os.listdir(out)) == [storage.FOLDER_MARKER, "b.csv"]
  # Empty folders (and folders of empty folders) hold nothing to lose.
  (tmp_path / "empty" / "sub").mkdir(parents=True)
  storage.commit_folder(str(tmp_path / "empty"), {"a.csv": "1\n"})
  with pytest.raises(ValueError, match="marker"):
    storage.commit_folder(str(tmp_path / "x"), {storage.FOLDER_MARKER: "{}"})


def test_a_committed_folder_verifies_its_files(tmp_path):
  # Found 2026-12-04 (fourteenth session): a run's folder had no checksums, so an edited or damaged result file was
  # reported as if the run had written it, and a deleted batches.csv gave a report with one figure fewer.
  out = tmp_path / "run"
  storage.commit_folder(str(out), {"a.csv": "1\n", "sub/b.bin": b"\x00\x01"})
  assert storage.verify_folder(str(out)) is True
  (out / "report").mkdir()                                   # a folder committed inside it is not its business
  (out / "report" / "x").write_text("y")
  assert storage.verify_folder(str(out)) is True
  data = bytearray((out / "sub" / "b.bin").read_bytes())
  data[1] ^= 0x10                                            # one flipped bit
  (out / "sub" / "b.bin").write_bytes(bytes(data))
  with pytest.raises(storage.StorageError, match=r"run/sub/b.bin has changed since jaxleak wrote it"):
    storage.verify_folder(str(out))
  (out / "sub" / "b.bin").unlink()
  with pytest.raises(storage.StorageError, match=r"run/sub/b.bin: listed in .jaxleak-folder.json but cannot be read"):
    storage.verify_folder(str(out))
  # A folder with no checksums (by hand, or an older jaxleak's marker) is not verified, and says so.
  (tmp_path / "hand").mkdir()
  assert storage.verify_folder(str(tmp_path / "hand")) is False
  (tmp_path / "hand" / storage.FOLDER_MARKER).write_text('{"written_by": "jaxleak", "files": []}')
  assert storage.verify_folder(str(tmp_path / "hand")) is False
  (tmp_path / "hand" / storage.FOLDER_MARKER).write_text('{"sha256": 7}')
  with pytest.raises(storage.StorageError, match="malformed checksums"):
    storage.verify_folder(str(tmp_path / "hand"))


def test_interrupted_swap_is_undone(tmp_path):
  out = tmp_path / "run"
  storage.commit_folder(str(out), {"a.csv": "old\n"})
  # Simulate a kill between the two renames: the old folder moved aside, the new one never renamed in.
  os.rename(out, tmp_path / ".run.old-123")
  os.makedirs(tmp_path / ".run.tmp-456")
  storage.recover_folder(str(out))
  assert (out / "a.csv").read_text() == "old\n" and os.listdir(tmp_path) == ["run"]


def test_checkpoint_round_trip_and_integrity(tmp_path):
  path = str(tmp_path / "x.ckpt")
  ckpt = storage.Checkpointer(path, {"lr": 0.1, "nested": {"a": 1}}, what="test run")
  assert ckpt.restore({"w": np.zeros(3)}) is None
  ckpt.save({"w": np.arange(3.0)}, {"done": 2})
  state, meta = storage.Checkpointer(path, {"nested": {"a": 1}, "lr": 0.1}).restore({"w": np.zeros(3)})
  np.testing.assert_array_equal(state["w"], [0.0, 1.0, 2.0])
  assert meta == {"done": 2}
  # One flipped byte in the payload: refused by its checksum.
  data = bytearray(open(path, "rb").read())
  data[-3] ^= 0xFF
  open(path, "wb").write(bytes(data))
  with pytest.raises(storage.StorageError, match="checksum"):
    ckpt.restore({"w": np.zeros(3)})
  # Truncated, and not a checkpoint at all.
  open(path, "wb").write(bytes(data[:40]))
  with pytest.raises(storage.StorageError):
    ckpt.restore({"w": np.zeros(3)})
  open(path, "wb").write(b"hello")
  with pytest.raises(storage.StorageError, match="not a jaxleak checkpoint"):
    ckpt.restore({"w": np.zeros(3)})


def test_a_checkpoint_of_other_shapes_is_refused_naming_the_leaf(tmp_path):
  import jax
  path = str(tmp_path / "x.ckpt")
  ckpt = storage.Checkpointer(path, {"lr": 0.1})
  ckpt.save({"w": np.zeros((2, 3)), "b": np.zeros(4), "extra": None})
  with pytest.raises(storage.StorageError, match=r"\['w'\]: stored \(2, 3\), expected \(3, 2\)"):
    ckpt.restore({"w": np.zeros((3, 2)), "b": np.zeros(4), "extra": None})
  # Shapes alone are enough (jax.eval_shape targets); a None in the target takes whatever was stored.
  state, _ = ckpt.restore({"w": jax.ShapeDtypeStruct((2, 3), np.float32), "b": np.zeros(4), "extra": None})
  assert state["w"].shape == (2, 3) and state["extra"] is None


def test_checkpoint_of_another_configuration_names_the_difference(tmp_path):
  path = str(tmp_path / "x.ckpt")
  storage.Checkpointer(path, {"lr": 0.1, "model": {"depth": 2}}).save(None, {})
  with pytest.raises(storage.CheckpointMismatch, match=r"lr: stored 0.1, now 0.2; model.depth: stored 2, now 3"):
    storage.Checkpointer(path, {"lr": 0.2, "model": {"depth": 3}}).restore()


def test_long_differences_are_shortened():
  """A field added since (a checkpoint without per-subject data digests) is named without printing all of it."""
  (line,) = storage.config_differences({}, {"data": {str(s): "1200:0123456789abcdef" for s in range(30)}})
  assert line.startswith("data: stored '<absent>', now {'0': '1200:0123456789abcdef'") and line.endswith(" ...")
  assert len(line) < 120


def test_fingerprint_is_canonical():
  assert storage.fingerprint({"a": 1, "b": [1, 2]}) == storage.fingerprint({"b": (1, 2), "a": 1})
  assert storage.fingerprint({"a": 1}) != storage.fingerprint({"a": 2})
  assert storage.fingerprint({"x": float("inf")}) == storage.fingerprint({"x": float("inf")})
  assert storage.fingerprint({"a": np.int64(1), "b": [np.float32(0.5)]}) == storage.fingerprint({"a": 1, "b": [0.5]})


@pytest.mark.parametrize("value,where", [({"b", "a"}, "config.x"), (object(), "config.x"),
                                         ([1, np.zeros(3)], r"config.x\[1\]"), ({"y": {1j}}, "config.x.y")])
def test_fingerprint_refuses_values_whose_text_is_unstable_or_lossy(value, where):
  """Before: anything not JSON was fingerprinted by its repr: a set of strings in another order in another
  process, an object by its address (a new key every run: nothing would ever resume), an array by a summary."""
  with pytest.raises(TypeError, match=f"{where}: a configuration holds JSON values"):
    storage.fingerprint({"x": value})


def test_unwritable_output_is_refused_before_work(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(storage.StorageError, match="is a file"):
    storage.check_writable_folder(str(blocker / "sub"))
  storage.check_writable_folder(str(tmp_path / "new" / "deeper"))           # creatable: fine


def test_a_folder_that_takes_no_files_is_refused_even_for_root(tmp_path, monkeypatch):
  # os.access says yes to root everywhere; the check creates a file to know.
  if os.path.isdir("/proc/self"):
    with pytest.raises(storage.StorageError, match=r"--output_dir /proc/jaxleak_x: no file can be created in /proc"):
      storage.check_writable_folder("/proc/jaxleak_x", "--output_dir")

  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")
  monkeypatch.setattr(storage.tempfile, "TemporaryFile", read_only)
  with pytest.raises(storage.StorageError, match=r"in .* \(read-only file system\); choose a folder"):
    storage.check_writable_folder(str(tmp_path / "out"))
  assert os.listdir(tmp_path) == []                                          # nothing made while checking


def test_a_read_only_folder_is_named_as_read_only_not_as_a_permission(tmp_path, monkeypatch):
  # Found 2026-12-06: a study on a read-only mount, as root: "report folder ...: no file can be created in ...
  # (permission denied)"; os.access said no before the real test could say why.
  from jaxleak import storage
  monkeypatch.setattr(storage.os, "access", lambda *a, **k: False)          # what access() says on a ro mount

  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")
  monkeypatch.setattr(storage.tempfile, "TemporaryFile", read_only)
  with pytest.raises(storage.StorageError, match=r"\(read-only file system\); choose a folder"):
    storage.check_writable_folder(str(tmp_path / "out"), "report folder")


_WRITER = """
import sys
from jaxleak import storage
path, n = sys.argv[1], 0
print("ready", flush=True)
while True:
  n += 1
  storage.commit_folder(path, {f"f{i}.txt": str(n) * 2000 for i in range(8)})
  storage.Checkpointer(path + ".ckpt", {"k": 1}).save({"n": n}, {"n": n})
"""


def test_a_ragged_csv_or_a_folder_as_a_file_path_writes_nothing(tmp_path):
  # Before: a row of too few or too many values was written (the columns of that row shifted), and a path that is
  # a folder failed in os.replace naming a temporary file.
  from jaxleak import storage
  target = tmp_path / "t.csv"
  for rows in ([[1]], [[1, 2], [1, 2, 3]]):
    with pytest.raises(ValueError, match=r"CSV row \d+ has \d values for 2 columns \['a', 'b'\]"):
      storage.write_csv(str(target), ["a", "b"], rows)
    assert not target.exists()
  storage.write_csv(str(target), ["a", "b"], iter([(1, 2), [3, "x\ny"]]))              # any iterable of rows
  assert storage.read_csv(str(target)) == [{"a": "1", "b": "2"}, {"a": "3", "b": "x\ny"}]
  (tmp_path / "sub").mkdir()
  with pytest.raises(IsADirectoryError, match="sub is a folder; give a file path"):
    storage.write_text(str(tmp_path / "sub"), "x")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "t.csv"]            # no temporary file left


@pytest.mark.parametrize("code,says", [(errno.ENOSPC, "no space is left on the device"),
                                       (errno.EDQUOT, "the disk quota is used up"),
                                       (errno.EROFS, "the file system is read-only")])
def test_a_full_disk_is_one_clear_error_and_keeps_what_was_stored(tmp_path, monkeypatch, code, says):
  """Found 2026-12-06 (thirty-fourth session) on a full tmpfs: a results folder or a study record that did not fit
  ended the command in a traceback ("OSError: [Errno 28] No space left on device"), after all its work."""
  from jaxleak import storage
  single, folder = str(tmp_path / "record.json"), str(tmp_path / "results")
  storage.write_text(single, "old")
  storage.commit_folder(folder, {"a.csv": "old"})

  def refuse(fd):                                      # the file's data does not fit (folders' syncs are best effort)
    raise OSError(code, os.strerror(code))
  monkeypatch.setattr(storage.os, "fsync", refuse)
  for path, write in ((single, lambda: storage.write_text(single, "new")),
                      (folder, lambda: storage.commit_folder(folder, {"a.csv": "new"}))):
    with pytest.raises(storage.StorageError, match=f"writing {re.escape(path)}: {says}. Nothing was half written "
                                                   "and whatever was stored before is kept;"):
      write()
  monkeypatch.undo()
  assert open(single).read() == "old" and open(os.path.join(folder, "a.csv")).read() == "old"
  assert sorted(os.listdir(tmp_path)) == ["record.json", "results"]                  # no temporary file left
  code = errno.EIO                                     # an error the user cannot fix this way stays what it is
  monkeypatch.setattr(storage.os, "fsync", refuse)
  with pytest.raises(OSError) as other:
    storage.write_text(single, "new")
  assert other.value.errno == errno.EIO and not isinstance(other.value, storage.StorageError)


def test_a_folder_name_too_long_for_the_file_system_is_refused_before_work(tmp_path):
  """Found 2026-12-06: --output_dir with a 300-character name ran the whole job, then ended in a traceback
  (ENAMETOOLONG making the temporary folder it is written through, whose name is 18 characters longer)."""
  from jaxleak import storage
  limit = storage._name_max(str(tmp_path))
  for name in ("a" * (limit + 1), "a" * (limit - 17)):
    with pytest.raises(storage.StorageError, match=f"--output_dir .*: the name a{{20}}... has {len(name)} characters; "
                                                   f"this file system allows {limit}"):
      storage.check_writable_folder(str(tmp_path / name), "--output_dir")
  with pytest.raises(storage.StorageError, match=f"has {limit + 1} characters; this file system allows {limit}. "):
    storage.check_writable_folder(str(tmp_path / ("b" * (limit + 1)) / "out"))
  fits = str(tmp_path / ("c" * limit) / ("d" * (limit - 18)))                  # the longest names that work
  storage.check_writable_folder(fits)
  storage.commit_folder(fits, {"a.csv": "x"})
  assert sorted(os.listdir(fits)) == [".jaxleak-folder.json", "a.csv"]
  assert os.listdir(tmp_path) == ["c" * limit]                                      # nothing made while checking


def test_kill_9_never_leaves_a_mixed_folder_or_a_broken_checkpoint(tmp_path):
  """A writer commits folders and checkpoints in a loop; kill -9 at random moments; every time, the folder holds
  one version entirely and the checkpoint verifies."""
  path = str(tmp_path / "run")
  rng = np.random.default_rng(0)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  for trial in range(6):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, path], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(float(rng.uniform(0.05, 0.4)))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    storage.recover_folder(path)
    if os.path.exists(path):
      files = sorted(f for f in os.listdir(path) if f != storage.FOLDER_MARKER)
      assert files == [f"f{i}.txt" for i in range(8)], files
      contents = {open(os.path.join(path, f)).read() for f in files}
      assert len(contents) == 1, f"trial {trial}: a folder mixing versions"
    restored = storage.Checkpointer(path + ".ckpt", {"k": 1}).restore({"n": 0})
    if restored is not None:
      assert int(restored[0]["n"]) == restored[1]["n"]


def test_a_claim_excludes_other_processes_and_dies_with_its_holder(tmp_path):
  path = str(tmp_path / "claims" / "g.lock")
  holder = subprocess.Popen([sys.executable, "-c", "import sys; from jaxleak import storage\n"
                             f"with storage.claim({path!r}):\n  print('held', flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    assert storage.is_claimed(path)
    assert storage.claim_holder(path) == f"{platform.node()} pid {holder.pid}"         # for status lines
    with pytest.raises(storage.Busy, match=re.escape(f"held by another process ({platform.node()} pid {holder.pid})")):
      with storage.claim(path):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert not storage.is_claimed(path)                 # the kernel released it with its holder
  with storage.claim(path) as held:
    assert held and os.path.exists(path)
  assert not storage.is_claimed(str(tmp_path / "never"))


def test_verify_folder_refuses_a_marker_listing_paths_outside_its_folder(tmp_path):
  storage.commit_folder(str(tmp_path / "out"), {"a.txt": "x"})
  marker = tmp_path / "out" / storage.FOLDER_MARKER
  body = json.loads(marker.read_text())
  body["sha256"]["../../etc/passwd"] = "0" * 64
  marker.write_text(json.dumps(body))
  with pytest.raises(storage.StorageError, match="outside the folder"):
    storage.verify_folder(str(tmp_path / "out"))


def test_a_folder_committed_by_another_process_meanwhile_is_one_line_and_stays_whole(tmp_path, monkeypatch):
  """Found 2026-12-04 (sixteenth session): two runs with one output folder: the one whose final rename lost the
  race ended in "OSError: [Errno 39] Directory not empty"."""
  target = str(tmp_path / "out")
  storage.commit_folder(target, {"a.txt": "first"})
  real_rename = os.rename

  def racing_rename(src, dst):
    if dst == target and ".tmp-" in os.path.basename(src):   # the other process's commit lands first
      os.makedirs(target)
      open(os.path.join(target, "a.txt"), "w").write("other")
    return real_rename(src, dst)
  monkeypatch.setattr(os, "rename", racing_rename)
  with pytest.raises(storage.StorageError, match="written by another process at the same moment"):
    storage.commit_folder(target, {"a.txt": "mine"})
  monkeypatch.undo()
  assert open(os.path.join(target, "a.txt")).read() == "other"
  assert sorted(os.listdir(tmp_path)) == ["out"]                    # no temp or old folder left beside it


def test_numpy_and_jax_values_are_written_as_json_numbers_and_lists(tmp_path):
  """Found 2026-12-05 (seventeenth session): a NumPy or JAX value in a written mapping was stored as its str(),
  so np.float32(1.5) read back as the text "1.5" and np.arange(3) as "[0 1 2]"."""
  import jax.numpy as jnp
  path = str(tmp_path / "values.json")
  storage.write_json(path, {"f": np.float32(1.5), "i": np.int64(3), "b": np.bool_(True), "a": np.arange(3),
                            "j": jnp.array([0.5, 2.0]), "js": jnp.int32(7), "other": {1, 2}})
  assert storage.read_json(path) == {"f": 1.5, "i": 3, "b": True, "a": [0, 1, 2], "j": [0.5, 2.0], "js": 7,
                                     "other": "{1, 2}"}


def test_exclusive_run_refuses_a_second_holder_and_ends_with_its_holder(tmp_path):
  path = str(tmp_path / "run.ckpt")
  with storage.exclusive_run(path, "demo run") as held:
    assert held
    with pytest.raises(storage.StorageError, match=r"ckpt: another process \(.+ pid \d+\) is running this demo run"):
      with storage.exclusive_run(path, "demo run"):
        pass
  with storage.exclusive_run(path, "demo run"):                  # released: the next one goes ahead
    pass
  assert os.listdir(tmp_path) == [".claims"]                       # beside the checkpoint, out of its way


def test_a_claimed_run_deletes_what_its_stopped_writers_left(tmp_path):
  """Found 2026-12-07 (thirty-eighth session): an Eavesdrop run killed while saving its checkpoint left the whole
  temporary checkpoint beside it for good (`.tmp-tsqu9i1b-rounds.ckpt`), one more at every such kill (a SIGTERM
  stops a run at once too); a DeepConvLSTM fold training's is ~5 MB a fold."""
  path = str(tmp_path / "run.ckpt")
  # A writer killed between its temporary file and the rename (a real kill -9 of a process inside write_bytes).
  code = ("import os, signal, jaxleak.storage as s; s.os.replace = lambda a, b: os.kill(os.getpid(), "
          f"signal.SIGKILL); s.write_bytes({path!r}, b'x' * 1000)")
  assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
  left = [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
  assert len(left) == 1 and left[0].endswith("-run.ckpt"), left
  others = [".tmp-abcd1234-other.ckpt", ".tmp-abcd1234-x-run.ckpt", "run.ckpt.tmp", ".tmp-short-run.ckpt"]
  for name in others:
    (tmp_path / name).write_bytes(b"")
  with storage.exclusive_run(path, "demo run"):
    assert sorted(os.listdir(tmp_path)) == sorted([".claims", *others])    # only this checkpoint's, once claimed


def test_provenance_asks_git_once_a_process(monkeypatch):
  # Found 2026-12-06 (thirty-fifth session): a study ran `git rev-parse` for every record it wrote (~1.4 ms each,
  # 14 s of a 10,000-setting sweep).
  import subprocess
  calls = []
  real = subprocess.run
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
  storage._git_commit.cache_clear()
  first = storage.provenance()
  assert storage.provenance().get("git_commit") == first.get("git_commit")
  assert len([a for a in calls if a[0][0] == "git"]) == 1, calls
  storage._git_commit.cache_clear()


def test_a_resume_folder_is_deleted_but_for_a_checkpoint_another_process_runs(tmp_path):
  """`delete_resume_folder` (the leakage drivers, once their results are written) deletes the checkpoints, their
  stopped writes and claims, and the folder; one whose claim another process holds stays, with the folder."""
  import fcntl
  folder = storage.resume_folder(str(tmp_path / "out"))
  assert folder == str(tmp_path / ".out.resume")
  for name in ("a.ckpt", "b.ckpt"):
    with storage.exclusive_run(os.path.join(folder, name), "demo"):
      storage.write_bytes(os.path.join(folder, name), b"x")
  (tmp_path / ".out.resume" / ".tmp-abcd1234-a.ckpt").write_bytes(b"half")
  with storage.exclusive_run(os.path.join(folder, "c.ckpt"), "demo"):        # stopped before its first save
    pass
  with open(os.path.join(folder, ".claims", "b.ckpt.lock"), "w") as held:     # b is running elsewhere
    fcntl.flock(held, fcntl.LOCK_EX)
    storage.delete_resume_folder(folder)
  assert sorted(os.listdir(folder)) == [".claims", "b.ckpt"]
  assert os.listdir(os.path.join(folder, ".claims")) == ["b.ckpt.lock"]
  storage.delete_resume_folder(folder)
  assert os.listdir(tmp_path) == []
  storage.delete_resume_folder(folder)                                        # gone: nothing to do
