"""Compile once per machine: JAX's persistent compilation cache for the command-line entry points.

Every command run through `jaxleak.cli.run` (the experiments and `python -m jaxleak.study`) stores the XLA
programs it compiles under a cache folder and loads them on the next run with the same shapes, so a repeated
command skips compilation. Where the cache lives, first match wins:

  1. the flag `--compilation_cache=<folder>` (or `off`);
  2. the environment variable `JAXLEAK_COMPILATION_CACHE=<folder>` (or `off`);
  3. `$XDG_CACHE_HOME/jaxleak/jax`, else `~/.cache/jaxleak/jax`.

Importing jaxleak as a library changes nothing: only `configure` (called by the CLI) touches JAX's config. The
cache is JAX's own (entries keyed by program, jax version and backend); deleting the folder at any time is safe and
only costs the next run its compilations. JAX writes an entry in place, not atomically, and never replaces one that
exists: an entry cut short (a full disk, a kill -9 while it was written) would warn "Error reading persistent
compilation cache entry" and recompile its program in every later run. `configure` therefore first drops the
entries it can tell are incomplete (`drop_incomplete_entries`).

  >>> resolve(None, {"JAXLEAK_COMPILATION_CACHE": "off"}) is None
  True
  >>> resolve("/tmp/c", {"JAXLEAK_COMPILATION_CACHE": "/elsewhere"})
  '/tmp/c'
"""
from __future__ import annotations

import os
import time
import zlib
from typing import Mapping, Optional

ENV_VAR = "JAXLEAK_COMPILATION_CACHE"
#: Touched when `drop_incomplete_entries` has checked the folder: later sweeps check only entries written since.
CHECKED_STAMP = ".jaxleak-checked"
_ENTRY_SUFFIX, _ATIME_SUFFIX = "-cache", "-atime"          # JAX's names: <key>-cache, <key>-atime (for eviction)
OFF = ("off", "none", "false", "0", "no")


def default_folder(environ: Optional[Mapping[str, str]] = None) -> str:
  """`$XDG_CACHE_HOME/jaxleak/jax`, else `~/.cache/jaxleak/jax` (`environ`: default os.environ; None as the default
  so that a signature shown by help() or a docs build never prints the environment, credentials included)."""
  environ = os.environ if environ is None else environ
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jaxleak", "jax")


def resolve(flag_value: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
  """The cache folder to use (absolute), or None for no cache: the flag, else the environment (default os.environ),
  else the default."""
  environ = os.environ if environ is None else environ
  value = flag_value if flag_value not in (None, "") else environ.get(ENV_VAR, "")
  if value == "":
    return default_folder(environ)
  if value.strip().lower() in OFF:
    return None
  return os.path.abspath(os.path.expanduser(value))


def configure(folder: Optional[str], *, explicit: bool = False, named_by: str = "--compilation_cache"
              ) -> Optional[str]:
  """Points JAX's persistent compilation cache at `folder` (None: leave it off). Returns the folder in use.

  Every compiled program is cached, however quick to compile (the main job's attack and gradient programs take
  0.2-3 s each). A folder that cannot be created is an error when the user named it (`explicit`), and otherwise
  only switches the cache off: a read-only home must not stop an experiment. `named_by` is where the user named it
  (the flag, or the environment variable), for the error.
  """
  if folder is None:
    return None
  try:
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
      raise PermissionError(f"{folder} is not writable")
  except OSError as e:
    if explicit:
      raise PermissionError(f"{named_by}={folder}: cannot write there ({e.strerror or e}); give a "
                            f"writable folder, or 'off'.") from None
    return None
  drop_incomplete_entries(folder)
  import jax
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return folder


def _complete(blob: bytes) -> bool:
  """False for an entry that is certainly cut short: empty, or a zlib stream (JAX's compression without zstandard)
  that ends before its end marker. Other formats (zstd) cannot be told apart cheaply and count as complete."""
  if not blob:
    return False
  if len(blob) < 2 or blob[0] & 0x0F != 8 or (blob[0] << 8 | blob[1]) % 31:      # not a zlib header
    return True
  inflater, data = zlib.decompressobj(), blob
  try:
    while not inflater.eof:
      produced = inflater.decompress(data, 1 << 24)            # bounded output: an entry inflates to ~10x
      data = inflater.unconsumed_tail
      if not produced and not data:
        break
  except zlib.error:
    return False
  return inflater.eof


def drop_incomplete_entries(folder: str) -> int:
  """Deletes the cache entries in `folder` that were cut short (see `_complete`), checking only those written since
  the last check (`CHECKED_STAMP`'s time; every entry the first time). Best effort: a file that cannot be read or
  removed is left alone. Returns how many were dropped; their programs are compiled and cached again.

  >>> import tempfile
  >>> d = tempfile.mkdtemp()
  >>> _ = open(os.path.join(d, "jit_f-abc-cache"), "wb").write(zlib.compress(b"program" * 100)[:-9])
  >>> drop_incomplete_entries(d), sorted(os.listdir(d))
  (1, ['.jaxleak-checked'])
  """
  stamp = os.path.join(folder, CHECKED_STAMP)
  try:
    since = os.stat(stamp).st_mtime - 2.0                  # slack for coarse file-system clocks
  except OSError:
    since = float("-inf")
  started, dropped = time.time(), 0
  try:
    entries = [e for e in os.scandir(folder) if e.name.endswith(_ENTRY_SUFFIX) and e.is_file()]
  except OSError:
    return 0
  for entry in entries:
    try:
      if entry.stat().st_mtime < since:
        continue
      with open(entry.path, "rb") as f:
        if _complete(f.read()):
          continue
      os.remove(entry.path)
      dropped += 1
      atime = entry.path[:-len(_ENTRY_SUFFIX)] + _ATIME_SUFFIX
      if os.path.exists(atime):
        os.remove(atime)
    except OSError:
      continue
  try:
    with open(stamp, "a"):
      pass
    os.utime(stamp, (started, started))
  except OSError:
    pass
  return dropped
