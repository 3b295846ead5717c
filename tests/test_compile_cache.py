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

  # Entries cut short, as a full disk or a kill -9 while JAX wrote them leaves them (found 2026-12-06: every later
  # run warned "Error reading persistent compilation cache entry" for each and compiled it again, for good).
  programs = sorted(cache / e for e in entries if e.endswith("-cache"))
  for i, path in enumerate(programs):
    path.write_bytes(b"" if i == 0 else path.read_bytes()[:path.stat().st_size // 2])
  proc = _run(small + [f"--output_dir={tmp_path / 'c'}", f"--compilation_cache={cache}"], {})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Error reading persistent compilation cache" not in proc.stderr, proc.stderr[-2000:]
  assert all(compile_cache._complete(p.read_bytes()) for p in programs)      # compiled and stored again, whole
  assert (tmp_path / "a" / "batches.csv").read_bytes() == (tmp_path / "c" / "batches.csv").read_bytes()


def test_only_entries_cut_short_are_dropped_and_only_new_ones_are_read(tmp_path):
  import time
  import zlib
  whole = zlib.compress(b"serialized executable " * 500)
  files = {"jit_a-1-cache": whole, "jit_b-2-cache": whole[:len(whole) // 2], "jit_c-3-cache": b"",
           "jit_b-2-atime": b"12345678", "jit_d-4-cache": b"\x28\xb5\x2f\xfd" + b"zstd frame, unread",
           "notes.txt": b""}
  for name, blob in files.items():
    (tmp_path / name).write_bytes(blob)
  assert compile_cache.drop_incomplete_entries(str(tmp_path)) == 2
  assert sorted(os.listdir(tmp_path)) == [compile_cache.CHECKED_STAMP, "jit_a-1-cache", "jit_d-4-cache", "notes.txt"]
  old = tmp_path / "jit_e-5-cache"                    # cut short before the last check: not read again
  old.write_bytes(b"")
  past = time.time() - 3600
  os.utime(old, (past, past))
  new = tmp_path / "jit_f-6-cache"
  new.write_bytes(b"")
  assert compile_cache.drop_incomplete_entries(str(tmp_path)) == 1 and old.exists() and not new.exists()


def test_in_process_calls_leave_jax_config_alone():
  import jax
  before = jax.config.jax_compilation_cache_dir
  assert cli.call(lambda argv: None, cli.flags.FlagValues(), []) == 0
  assert jax.config.jax_compilation_cache_dir == before
