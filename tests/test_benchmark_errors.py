"""The benchmark scripts refuse nonsense the way the experiments do: a value a config refuses is one line and exit
status 2, a count below its bound is absl's flag error, never a traceback from deep inside. And the attack
benchmark, which runs every registered attack, still runs to its end when an attack is added."""
import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = sorted(p for p in ROOT.glob("benchmarks/*.py") if not p.name.startswith("_"))


def _bench(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, expected", [
    (["benchmarks/eavesdrop.py", "--dataset=foo"], "error: --dataset: unknown 'foo'; valid: digits, mnist"),
    (["benchmarks/study.py", "grid", "--set", "foo=1"], "error: unknown study field(s) ['foo'] for har_paper"),
    (["benchmarks/attacks.py", "--mixed_attacks=llg,nope"], "error: --mixed_attacks: 'nope' is not an attack"),
    (["benchmarks/attacks.py", "--mixed_attacks=ilrg"], "error: --mixed_attacks: 'ilrg' needs model estimates"),
    # Found 2026-12-06 (twenty-eighth session): a benchmark's app.UsageError (a bad list flag, an unknown mode)
    # printed the module's whole docstring before its line, with exit status 1.
    (["benchmarks/aggregation.py", "--clients_per_round=2,x"], "error: --clients_per_round=2,x: 'x' is not an"),
    (["benchmarks/study.py", "gird"], "error: benchmarks/study.py: unknown mode 'gird'"),
])
def test_a_refused_config_value_is_one_line(args, expected):
  proc = _bench(*args)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert "python benchmarks/" not in proc.stdout, proc.stdout[:2000]          # not the module's usage text


def test_a_refused_row_setting_comes_before_the_table_header():
  # Found 2026-12-04 (sixteenth session): --stage=5 printed the table's title and header, then the refusal.
  proc = _bench("benchmarks/wd_separation.py", "--stage=5", "--dataset=digits")
  assert proc.returncode == 2 and "stages must be increasing test accuracies" in proc.stderr, proc.stderr[-2000:]
  assert proc.stdout == ""


def test_a_count_below_its_bound_is_a_flag_error():
  # --num_batches=0 used to reach an empty gather: "IndexError: index is out of bounds for axis 0 with size 0".
  proc = _bench("benchmarks/flops.py", "--num_batches=0")
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr      # one line, as every user error
  assert "error: flag --num_batches=0: 0 is not a positive integer" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_runs_through_the_shared_runner(path):
  """`_flags.run`, not `app.run`: otherwise a config's refusal is a traceback again (torch_reference.py is a
  module the reference-way benchmark imports, not a program)."""
  tree = ast.parse(path.read_text())
  calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
  if path.name == "torch_reference.py":
    assert "app.run" not in calls and "_flags.run" not in calls
    return
  assert "_flags.run" in calls and "app.run" not in calls, path.name


def test_the_attack_benchmark_runs_every_registered_attack():
  # Found 2026-12-05 (twenty-third session): it stopped at 'rlu' (registered after it was written: "requires
  # rlu_basis"), so its table and baseline never printed.
  import jaxleak.attacks as A
  proc = _bench("benchmarks/attacks.py", "--num_grads=16", "--baseline_grads=4", "--num_samples=5",
                "--num_classes=4", "--feature_dim=8", "--mixed_attacks=llbg,random")
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
  assert set(A.names()) <= rows, proc.stdout
  assert "identical counts on 100.0% of 4 gradients" in proc.stdout
  assert proc.stdout.count("identical counts on 100.0%;") == 2, proc.stdout
