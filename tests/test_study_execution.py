"""The study engine run as people run it: killed with kill -9 and resumed, and on Ray (split from test_study.py
so that the two slowest study tests run beside the rest on the other pytest-xdist worker)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxleak import storage
from jaxleak.runs import study as S

TINY = {"datasets": "synthetic_tiny", "models": "tinyhar", "states": "untrained", "num_clients": "2"}


# Two groups of different shapes, and no compilation cache: the second group compiles its own programs (~5 s),
# a window after the first record in which the kill lands. (Groups of one shape now take ~0 s once the first has
# compiled, and a cache filled by the unbroken run would make the second fast too: the kill would race.)
_RUN = [sys.executable, "-m", "jaxleak.study", "run", "har_sampling", "--set=datasets=synthetic_tiny",
        "--set=models=tinyhar", "--set=states=untrained", "--set=num_clients=2", "--set=attacks=ebi",
        "--set=samplings=sequential", "--set=multi_step=20:10:2,30:10:3", "--compilation_cache=off"]


def test_killed_study_resumes_to_records_bitwise_equal_to_an_unbroken_run(tmp_path):
  # XLA's backend at -O0: this tests the resume plumbing, not the compiler, and compiles ~2x faster.
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()}
  unbroken, killed = tmp_path / "unbroken", tmp_path / "killed"
  # The unbroken run fills a compilation cache the resumed run reads (the same programs, so the same bytes; it only
  # saves compiling). The run that is killed keeps its cache off: a kill mid-write must not be what is tested.
  cache = f"--compilation_cache={tmp_path / 'cache'}"
  r = subprocess.run(_RUN + [f"--study_dir={unbroken}", cache], env=env, capture_output=True, text=True,
                     timeout=900)
  assert r.returncode == 0, r.stderr[-2000:]
  proc = subprocess.Popen(_RUN + [f"--study_dir={killed}"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while time.time() < deadline and not (killed / "records").exists():   # kill -9 after the first record
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert len(os.listdir(killed / "records")) < 2
  r = subprocess.run(_RUN + [f"--study_dir={killed}", cache], env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-2000:]
  records = lambda folder: sorted(f for f in os.listdir(folder / "records") if not f.startswith(".tmp-"))
  names = records(unbroken)
  # A kill during a record's atomic write leaves a hidden temp file beside the records, never a record.
  assert len(names) == 2 and names == records(killed)
  for name in names:
    assert (unbroken / "records" / name).read_bytes() == (killed / "records" / name).read_bytes()


def test_ray_executor_writes_the_same_records_as_the_local_one(tmp_path, monkeypatch):
  ray = pytest.importorskip("ray")
  asked, remote_options = [], ray.remote
  monkeypatch.setattr(ray, "remote", lambda *a, **kw: (asked.append(kw), remote_options(*a, **kw))[1])
  from jaxleak.runs.study import executors
  st = S.override(S.preset("har_ldp"), {**TINY, "samplings": "sequential", "attacks": "ebi", "ldp": "0:0,0.1:1.0"})
  plan = S.make_plan(st)                           # one group (one Ray task) of two tasks
  local, remote = S.Store(str(tmp_path / "local")), S.Store(str(tmp_path / "ray"))
  S.run_plan(plan, local, progress=None)
  # A cluster that says it has a GPU (Ray takes the count on trust): each task asks for it by default, since Ray
  # hides the GPUs from a task that asks for none; without a GPU plugin JAX still runs on the CPU.
  # address="local": a Ray of its own even where a cluster already runs on this machine (which a bare ray.init
  # joins, refusing num_cpus/num_gpus).
  ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
  try:
    with pytest.raises(ValueError, match=r"--ray_gpus_per_task=2: no node of this Ray cluster has that many GPUs "
                                         r"\(the most on one node: 1\), so no group could ever start"):
      executors.run_with_ray(plan, remote, progress=None, gpus=2)
    lines = []
    assert executors.run_with_ray(plan, remote, progress=lines.append) == 2
    assert lines[0].startswith("ray: 1 group submitted (0 already done), 1 GPU and 1 CPU each"), lines
    assert asked[-1] == {"num_cpus": 1, "num_gpus": 1.0}, asked
    # A group this process runs (holds its claim) is skipped by the Ray worker, and the driver says so.
    held, lines = S.Store(str(tmp_path / "held")), []
    with storage.claim(held.claim_path(plan.groups[0].key)):
      assert executors.run_with_ray(plan, held, progress=lines.append, gpus=0) == 0
    assert "1 CPU each" in lines[0] and asked[-1]["num_gpus"] == 0, (lines, asked)
    assert any("being run by another process; skipped" in line for line in lines), lines
    assert not os.path.isdir(os.path.join(held.root, "records"))
  finally:
    ray.shutdown()
  for task in plan.tasks:
    a = open(os.path.join(local.root, "records", task.key + ".json"), "rb").read()
    b = open(os.path.join(remote.root, "records", task.key + ".json"), "rb").read()
    assert a == b


def test_only_the_writing_process_checkpoints_a_groups_run(tmp_path):
  """The other processes of a jax.distributed study (a read-only store) compute Eavesdrop and Whole Determination
  runs without checkpointing: they would write the writer's files, and be refused the claim on its checkpoint
  that every resumable run now takes (found 2026-12-05, seventeenth session, with that claim)."""
  import types
  from jaxleak.runs.study import engine
  task = types.SimpleNamespace(key="abc")
  assert engine._checkpoint(S.Store(str(tmp_path), read_only=True), task) is None
  assert engine._checkpoint(S.Store(str(tmp_path)), task) == str(tmp_path / "checkpoints" / "abc.ckpt")


def test_groups_that_fail_on_ray_are_each_said_and_the_run_ends_in_one_line(tmp_path, monkeypatch, capsys):
  """Found 2026-12-07 (thirty-eighth session): with the local raylet killed, `study run --executor=ray` ended in a
  RuntimeError traceback, its summary holding only the first failure, and the failures were not said as they came.
  A stand-in for Ray's task API (its own exception classes) fails one group as a dead worker, one as the group's
  own error; the third finishes."""
  import types
  ray = pytest.importorskip("ray")
  from jaxleak import cli
  from jaxleak import study as study_cli
  from jaxleak.runs.study import executors
  args = ["run", "har_sampling", "--set=datasets=synthetic_tiny", "--set=models=tinyhar", "--set=states=untrained",
          "--set=num_clients=2", "--set=attacks=ebi", "--executor=ray", f"--study_dir={tmp_path}"]
  raised = ray.exceptions.RayTaskError("_run_group", "Traceback (most recent call last):\nValueError: boom",
                                       ValueError("boom\nsecond line")).as_instanceof_cause()
  outcomes, calls = [ray.exceptions.WorkerCrashedError(), (1, False), raised], []

  class StandIn:                                 # ray.remote(...)(f).remote(...) -> a ref; wait; get
    exceptions = ray.exceptions
    is_initialized, nodes = staticmethod(lambda: True), staticmethod(lambda: [])

    @staticmethod
    def remote(**options):
      def submit(*args):
        calls.append(args)
        return len(calls) - 1
      return lambda f: types.SimpleNamespace(remote=submit)

    @staticmethod
    def wait(refs, num_returns):
      return refs[:1], refs[1:]

    @staticmethod
    def get(ref):
      if isinstance(outcomes[ref], Exception):
        raise outcomes[ref]
      return outcomes[ref]

  monkeypatch.setattr(executors, "require_ray", lambda: StandIn)
  lines = []
  monkeypatch.setattr(cli, "progress", lines.append)
  assert cli.call(study_cli.main, study_cli.FLAGS, args) == 1
  assert len(calls) == 3, calls
  failed = [line for line in lines if "group failed" in line]
  assert len(failed) == 2 and "group done" in lines[2], lines
  assert ": The worker died unexpectedly while executing this task." in failed[0], failed     # Ray's first line
  assert failed[1].endswith(": ValueError: boom; 3/3"), failed
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: 2 groups failed on Ray, e.g. [synthetic_tiny tinyhar "), err
  assert "run the same command again to retry them (finished groups are kept)" in err[0]


def test_a_cluster_ray_cannot_join_is_one_line_without_its_credentials(tmp_path, monkeypatch, capsys):
  """Found 2026-12-07 (thirty-eighth session): a `ray start --head` cluster with token authentication, given by its
  address (Ray 2.60 found the token only for --ray_address=auto), ended after a minute of Ray's retries in a
  ConnectionError traceback. A stand-in for Ray whose init fails as Ray's did; the address check passes."""
  import types
  from jaxleak import cli
  from jaxleak import study as study_cli
  from jaxleak.runs.study import executors

  def init(**kwargs):
    raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6390\nsecond line")
  monkeypatch.setattr(executors, "require_ray", lambda: types.SimpleNamespace(is_initialized=lambda: False, init=init))
  monkeypatch.setattr(executors, "check_address", lambda address: None)
  args = ["run", "har_sampling", "--set=datasets=synthetic_tiny", "--set=states=untrained", "--executor=ray",
          f"--study_dir={tmp_path}", "--ray_address=ray://me:secret@127.0.0.1:6390"]
  assert cli.call(study_cli.main, study_cli.FLAGS, args) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [err[0]] and err[0].startswith(
      "error: --ray_address ray://***@127.0.0.1:6390: Ray could not join the cluster there (Ray: Failed to connect to "
      "Ray cluster at 192.0.2.2:6390). Check the address"), err
  assert "secret" not in err[0] and "RAY_AUTH_TOKEN" in err[0]
  # No --ray_address: Ray joins $RAY_ADDRESS, else a cluster `ray start` began here, else starts one; said as such.
  for env, said in (("", "Ray could not join a cluster started on this machine, or start one (Ray: Failed"),
                    ("10.0.0.1:6379", "Ray could not join the cluster in $RAY_ADDRESS (Ray: Failed")):
    monkeypatch.setenv("RAY_ADDRESS", env)
    assert cli.call(study_cli.main, study_cli.FLAGS, args[:-1]) == 2
    assert capsys.readouterr().err.startswith("error: " + said)
