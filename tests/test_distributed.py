"""jax.distributed: one leakage run computed by 2 local CPU processes equals the single-process run."""
import os
import socket
import subprocess
import sys

from experiments import single_step_leakage as SS
from jaxleak import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_processes(script, args, out):
  port = _free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, os.path.join(ROOT, "experiments", script), *args, f"--output_dir={out}", "--distributed",
         f"--coordinator_address=localhost:{port}", "--num_processes=2"]
  procs = [subprocess.Popen(cmd + [f"--process_id={i}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def test_two_processes_equal_one(tmp_path, capsys):
  args = ["--dataset=synthetic_tiny", "--model=tinyhar", "--num_samples=50", "--num_clients=3",
          "--attacks=ebi,ilrg,llg_star", "--chunk_size=2"]
  assert cli.call(SS.main, SS.FLAGS, [*args, f"--output_dir={tmp_path / 'one'}"]) == 0
  outs = _two_processes("single_step_leakage.py", args, tmp_path / "two")
  assert "process 1 of 2" in outs[1][1]
  for name in ("batches.csv", "clients.csv", "summary.csv"):
    assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def test_a_wrong_coordinator_is_one_line_not_an_abort(tmp_path, capsys):
  """Found 2026-12-04 (sixteenth session): process 1 with a coordinator nobody listens at was aborted by
  jax.distributed after 300 s in a C++ stack trace ("Terminating process ... DEADLINE_EXCEEDED"), and a malformed
  address ended in "IndexError: list index out of range"."""
  base = ["--dataset=synthetic_tiny", "--model=tinyhar", f"--output_dir={tmp_path}", "--distributed",
          "--num_processes=2", "--process_id=1"]
  assert cli.call(SS.main, SS.FLAGS, [*base, "--coordinator_address=nohostport"]) == 2
  assert "--coordinator_address=nohostport: must be host:port" in capsys.readouterr().err
  port = _free_port()
  assert cli.call(SS.main, SS.FLAGS, [*base, f"--coordinator_address=localhost:{port}",
                                      "--distributed_timeout=2"]) == 2
  err = capsys.readouterr().err
  assert f"--coordinator_address=localhost:{port}: nothing answered there within --distributed_timeout=2 s" in err
  assert cli.call(SS.main, SS.FLAGS, ["--dataset=synthetic_tiny", "--distributed_timeout=5"]) == 2
  assert "--distributed_timeout is only used with --distributed" in capsys.readouterr().err


def test_a_coordinator_port_in_use_is_one_line(tmp_path, capsys):
  """Found 2026-12-04 (sixteenth session): process 0 on a port something else listens on ended in "JaxRuntimeError:
  UNKNOWN: Failed to start RPC server" and a traceback."""
  with socket.socket() as busy:
    busy.bind(("", 0))
    busy.listen()
    port = busy.getsockname()[1]
    assert cli.call(SS.main, SS.FLAGS, ["--dataset=synthetic_tiny", f"--output_dir={tmp_path}", "--distributed",
                                        f"--coordinator_address=localhost:{port}", "--num_processes=2",
                                        "--process_id=0"]) == 2
  assert f"--coordinator_address: port {port} is in use on this machine" in capsys.readouterr().err


def test_a_process_that_dies_midway_stops_the_other_in_one_line(tmp_path):
  """Found 2026-12-07 (thirty-eighth session): with one of two processes killed, the other ended ~100 s later in a
  JaxRuntimeError traceback (its all-gather timed out) and then JAX's C++ abort at its shutdown barrier
  ("Terminating process because the JAX distributed service detected fatal errors", exit -6)."""
  port = _free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "single_step_leakage.py"), "--dataset=synthetic_tiny",
         "--model=tinyhar", "--num_samples=50", "--attacks=ebi", f"--output_dir={tmp_path / 'out'}",
         "--compilation_cache=off", "--distributed", f"--coordinator_address=localhost:{port}", "--num_processes=2"]
  survivor = subprocess.Popen(cmd + ["--process_id=0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
  doomed = subprocess.Popen(cmd + ["--process_id=1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
  for line in doomed.stderr:                     # joined, and not yet at the all-gather of the updates
    if "process 1 of 2" in line:
      break
  doomed.kill()
  doomed.communicate()
  _, err = survivor.communicate(timeout=300)
  assert survivor.returncode == 2, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert last.startswith("error: this process (0 of 2) of a --distributed run could not reach the others, most likely "
                         "because one of them stopped (JAX: "), err[-3000:]
  assert "start all 2 processes again with the same command" in last
  assert "Traceback" not in err and "Terminating process" not in err, err[-3000:]
  assert not (tmp_path / "out").exists()


def test_only_a_distributed_runs_lost_collective_reads_as_a_lost_process(monkeypatch):
  import jax
  gloo = ValueError("UNKNOWN: Gloo AllGather failed: [pair.cc:547] Connection closed by peer [127.0.0.1]:1732")
  assert cli.lost_process(gloo) is None                     # one process: JAX's words, whatever they say
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  assert cli.lost_process(gloo).startswith("UNKNOWN: Gloo AllGather failed")
  assert cli.lost_process(RuntimeError("DEADLINE_EXCEEDED: GetKeyValue() timed out")) is not None
  assert cli.lost_process(ValueError("num_samples must be positive")) is None      # a user's error stays one
  assert cli.lost_process(RuntimeError("RESOURCE_EXHAUSTED: Out of memory")) is None
  assert cli.lost_process(KeyError("gloo")) is None


def test_processes_given_different_commands_are_refused_on_every_process(tmp_path):
  """Found 2026-12-07 (thirty-eighth session): a study's two processes given `--set num_clients=2` and `=3` ended
  in gloo's C++ abort on process 0 and "Gloo AllGather failed" on the other: their shares did not fit together."""
  port = _free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "single_step_leakage.py"), "--dataset=synthetic_tiny",
         "--model=tinyhar", "--attacks=ebi", "--compilation_cache=off", "--distributed",
         f"--coordinator_address=localhost:{port}", "--num_processes=2"]
  procs = [subprocess.Popen(cmd + [f"--process_id={i}", f"--num_samples={n}", f"--output_dir={tmp_path / str(i)}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i, n in ((0, 50), (1, 40))]                # output folders may differ; N may not
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "error: --distributed: process 1 was started with another command than process 0 (other flags, --set values "
        "or arguments): each process computes a share of the same work; give every process the same command, with "
        "its own --process_id (folders may differ)."), err[-3000:]
  assert not os.listdir(tmp_path)
