"""The leakage drivers resume: a run killed in its gradient pass (or local training), run again, continues from its
saved calls to the same results bit for bit (added 2026-12-07, thirty-ninth session: before, a single- or
multi-step driver run started over whatever it had done, minutes of a WEAR-sized multi-step run)."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from jaxleak import storage
from jaxleak.runs.leakage import LeakageConfig, ldp_setting, run_ldp_sweep, run_leakage, updates

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Saves after every call, and kill -9 at the KILL_AT-th save: a real kill inside the pass.
_KILLED = """
import os, runpy, signal, sys
from jaxleak import storage
from jaxleak.runs.leakage import updates
updates.SAVE_EVERY_S = 0.0
real_save, saves = storage.Checkpointer.save, []
def save(self, *a, **k):
  real_save(self, *a, **k)
  saves.append(1)
  if len(saves) == int(os.environ["KILL_AT"]):
    os.kill(os.getpid(), signal.SIGKILL)
storage.Checkpointer.save = save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
_MULTI = [os.path.join(ROOT, "experiments", "multi_step_leakage.py"), "--dataset=synthetic_tiny", "--num_clients=3",
          "--sampling=sequential", "--num_samples=40", "--local_batch_size=20", "--local_steps=2",
          "--attacks=ebi,llbg,ilrg", "--compilation_cache=off"]


def test_a_killed_multi_step_run_resumes_to_the_unbroken_runs_files(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  unbroken, killed = tmp_path / "unbroken", tmp_path / "killed"
  r = subprocess.run([sys.executable, *_MULTI, f"--output_dir={unbroken}"], env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  r = subprocess.run([sys.executable, "-c", _KILLED, *_MULTI, f"--output_dir={killed}"],
                     env={**env, "KILL_AT": "3"}, capture_output=True, text=True, timeout=600)
  assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
  resume = storage.resume_folder(str(killed))
  assert not killed.exists() and len([f for f in os.listdir(resume) if f.endswith(".ckpt")]) == 1
  r = subprocess.run([sys.executable, *_MULTI, f"--output_dir={killed}"], env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "local training: resuming after 3 of" in r.stderr, r.stderr[-3000:]
  for name in ("batches.csv", "clients.csv", "summary.csv"):
    assert (unbroken / name).read_bytes() == (killed / name).read_bytes(), name
  assert sorted(os.listdir(tmp_path)) == ["killed", "unbroken"]       # the resume folders are gone


class _Stop(Exception):
  pass


def _stopping_after(monkeypatch, saves: int):
  """Every call saved, and the run stopped (as by a kill) right after the `saves`-th save."""
  monkeypatch.setattr(updates, "SAVE_EVERY_S", 0.0)
  real, done = storage.Checkpointer.save, []

  def save(self, *a, **k):
    real(self, *a, **k)
    done.append(1)
    if len(done) == saves:
      raise _Stop
  monkeypatch.setattr(storage.Checkpointer, "save", save)
  return lambda: monkeypatch.setattr(storage.Checkpointer, "save", real)


def _same(a, b):
  for name in a:
    np.testing.assert_array_equal(a[name].true_counts, b[name].true_counts)
    for attack in a[name].pred_counts:
      np.testing.assert_array_equal(a[name].pred_counts[attack], b[name].pred_counts[attack], err_msg=attack)


# A shared pass (head gradients and whole-model norms), then a per-example setting's own pass: each resumable.
CFG = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=20, num_clients=3, chunk_size=1,
                    attacks=("ebi", "llbg", "ilrg_uniform"))
SETTINGS = {"none": ldp_setting(0.0, 0.0), "b": ldp_setting(0.01, 0.5),
            "p": ldp_setting(0.01, 0.5, granularity="per_example")}


# A shared pass then the per-example setting's; each saves after every call but its last.
@pytest.mark.parametrize("stopped_in", ["gradients + model norms", "gradients"])
def test_a_stopped_ldp_sweep_resumes_to_the_results_of_one_unstopped(tmp_path, monkeypatch, stopped_in):
  lines = []
  plain = run_ldp_sweep(CFG, SETTINGS, progress=lines.append)
  calls = {what: sum(line.startswith(what + ": ") and "updates (" in line for line in lines)
           for what in ("gradients + model norms", "gradients")}
  assert min(calls.values()) >= 4, calls
  saves = 2 if stopped_in == "gradients + model norms" else calls["gradients + model norms"] - 1 + 2
  restore = _stopping_after(monkeypatch, saves)
  with pytest.raises(_Stop):
    run_ldp_sweep(CFG, SETTINGS, resume_dir=str(tmp_path / "resume"))
  restore()
  lines = []
  resumed_run = run_ldp_sweep(CFG, SETTINGS, resume_dir=str(tmp_path / "resume"), progress=lines.append)
  shared = calls["gradients + model norms"]
  expected = ([f"gradients + model norms: resuming after 2 of {shared} calls"] if stopped_in != "gradients" else
              [f"gradients + model norms: resuming after {shared - 1} of {shared} calls",   # all saved but the last
               f"gradients: resuming after 2 of {calls['gradients']} calls"])
  hits = [line.split(" from ")[0] for line in lines if "resuming" in line]
  assert hits == expected, hits
  _same(plain, resumed_run)
  storage.delete_resume_folder(str(tmp_path / "resume"))
  assert os.listdir(tmp_path) == []


def _stopped_run(monkeypatch, resume: str, saves: int) -> str:
  """Runs CFG resumably into `resume`, stopped after `saves` saves; the name of its checkpoint there."""
  restore = _stopping_after(monkeypatch, saves)
  with pytest.raises(_Stop):
    run_leakage(CFG, resume_dir=resume)
  restore()
  (name,) = [f for f in os.listdir(resume) if f.endswith(".ckpt")]
  return name


def test_a_resume_file_of_another_run_or_a_damaged_one_is_not_used(tmp_path, monkeypatch):
  resume = str(tmp_path / "resume")
  path = os.path.join(resume, _stopped_run(monkeypatch, resume, 2))
  # Another seed (other windows, keys and model): a checkpoint of its own, nothing resumed.
  lines, other = [], LeakageConfig(**{**CFG.__dict__, "seed": 2})
  _same({"": run_leakage(other)}, {"": run_leakage(other, resume_dir=resume, progress=lines.append)})
  assert not any("resuming" in line for line in lines), lines
  assert len([f for f in os.listdir(resume) if f.endswith(".ckpt")]) == 2
  # The same run with its checkpoint damaged on disk: said, and computed again.
  data = bytearray(open(path, "rb").read())
  data[-5] ^= 0xFF
  open(path, "wb").write(bytes(data))
  lines = []
  _same({"": run_leakage(CFG)}, {"": run_leakage(CFG, resume_dir=resume, progress=lines.append)})
  assert any("cannot be resumed from" in line and "checksum" in line for line in lines), lines


def test_a_run_whose_calls_another_process_is_running_is_refused(tmp_path, monkeypatch):
  import fcntl
  resume = str(tmp_path / "resume")
  name = _stopped_run(monkeypatch, resume, 1)
  with open(os.path.join(resume, ".claims", name + ".lock"), "w") as held:    # as another process's claim
    fcntl.flock(held, fcntl.LOCK_EX)
    with pytest.raises(storage.StorageError, match=r"another process \(holder unknown\) is running this leakage "
                                                   r"run now; let it finish"):
      run_leakage(CFG, resume_dir=resume)
