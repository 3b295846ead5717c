"""The persistent compilation cache of the command-line entry points (jaxleak.compile_cache)."""
import os
import subprocess
import sys

import pytest

from jaxleak import cli, compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("flag,env,expected", [
    (None, {}, "/home/u/.cache/jaxleak/jax"),
    (None, {"XDG_CACHE_HOME": "/xdg"}, "/xdg/jaxleak/jax"),
    (None, {"JAXLEAK_COMPILATION_CACHE": "/env/c"}, "/env/c"),
    (None, {"JAXLEAK_COMPILATION_CACHE": "OFF"}, None),
    ("/flag/c", {"JAXLEAK_COMPILATION_CACHE": "off"}, "/flag/c"),
    ("off", {"JAXLEAK_COMPILATION_CACHE": "/env/c"}, None),
    ("none", {}, None),
])
def test_the_flag_beats_the_environment_which_beats_the_default(flag, env, expected, monkeypatch):
  monkeypatch.setenv("HOME", "/home/u")
  assert compile_cache.resolve(flag, env) == expected


def test_a_named_folder_that_cannot_be_written_is_refused_in_one_line(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(PermissionError, match=r"--compilation_cache=.*give a writable folder, or 'off'"):
    compile_cache.configure(str(blocker / "cache"), explicit=True)
  assert compile_cache.configure(str(blocker / "cache"), explicit=False) is None     # the default: just off
  assert compile_cache.configure(None) is None
  with pytest.raises(PermissionError, match=r"^\$JAXLEAK_COMPILATION_CACHE=.*give a writable folder"):
    compile_cache.configure(str(blocker / "cache"), explicit=True, named_by="$JAXLEAK_COMPILATION_CACHE")


def test_a_command_names_the_environment_variable_when_that_named_the_folder(tmp_path):
  """Found 2026-12-05 (seventeenth session): the error said --compilation_cache=... for a folder the user named
  in $JAXLEAK_COMPILATION_CACHE and never on the command line."""
  blocker = tmp_path / "file"
  blocker.write_text("")
  proc = _run([f"--output_dir={tmp_path / 'out'}"], {"JAXLEAK_COMPILATION_CACHE": str(blocker / "cache")})
  assert proc.returncode == 2 and proc.stderr.startswith(f"error: $JAXLEAK_COMPILATION_CACHE={blocker}/cache: "), \
      proc.stderr[-2000:]
  assert not (tmp_path / "out").exists()


def _run(args, env_extra):
  # XLA's backend at -O0 in both runs compared: this tests where programs are cached, not the compiler (~2x faster).
  env = {**os.environ, "PYTHONPATH": ROOT, **env_extra,
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()}
  env.pop("JAXLEAK_COMPILATION_CACHE", None) if "JAXLEAK_COMPILATION_CACHE" not in env_extra else None
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "single_step_leakage.py"), *args],
                        capture_output=True, text=True, env=env, timeout=600)


def test_a_command_fills_the_cache_it_is_given_and_off_leaves_it_alone(tmp_path):
  small = ["--dataset=synthetic_wetlab", "--synthetic_scale=0.02", "--model=tinyhar", "--attacks=ebi",
           "--num_samples=20"]
  cache = tmp_path / "cache"
  proc = _run(small + [f"--output_dir={tmp_path / 'a'}", f"--compilation_cache={cache}"], {})
  assert proc.returncode == 0, proc.stderr[-2000:]
  entries = set(os.listdir(cache))
  assert entries                                                     # compiled programs were stored
  proc = _run(small + [f"--output_dir={tmp_path / 'b'}"], {"JAXLEAK_COMPILATION_CACHE": "off",
                                                           "XDG_CACHE_HOME": str(tmp_path / "xdg")})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert not (tmp_path / "xdg").exists() and set(os.listdir(cache)) == entries
  for name in ("summary.csv", "batches.csv"):                        # the same results either way
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_in_process_calls_leave_jax_config_alone():
  import jax
  before = jax.config.jax_compilation_cache_dir
  assert cli.call(lambda argv: None, cli.flags.FlagValues(), []) == 0
  assert jax.config.jax_compilation_cache_dir == before
