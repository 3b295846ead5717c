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
