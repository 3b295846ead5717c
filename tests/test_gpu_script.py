"""benchmarks/gpu.sh, the prepared device run, works before it meets a GPU: step selection, its log, a refused
step name. (Its steps are the benchmarks, run on the device machine; here only the cheap `devices` step.)"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu.sh")


def _run(out, *steps):
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
  return subprocess.run(["bash", SCRIPT, str(out), *steps], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=120)


def test_named_step_runs_alone_and_is_logged(tmp_path):
  proc = _run(tmp_path, "devices")
  assert proc.returncode == 0, proc.stderr
  log = (tmp_path / "gpu.log").read_text()
  assert "=== devices: exit 0," in log and " ms" in log, log
  assert "jax.devices" not in log and "Device" in log               # jax's device list was printed
  assert "main job" not in log and "grid" not in log                # no other step ran


def test_unknown_step_is_refused_before_anything_runs(tmp_path):
  proc = _run(tmp_path / "out", "devices", "gird")
  assert proc.returncode == 2
  assert "unknown step 'gird'" in proc.stderr and "devices main flops sweep grid eavesdrop" in proc.stderr
  assert not (tmp_path / "out").exists()
