"""Compile once per machine: JAX's persistent compilation cache for the command-line entry points.

Every command run through `jaxleak.cli.run` (the experiments and `python -m jaxleak.study`) stores the XLA
programs it compiles under a cache folder and loads them on the next run with the same shapes, so a repeated
command skips compilation. Where the cache lives, first match wins:

  1. the flag `--compilation_cache=<folder>` (or `off`);
  2. the environment variable `JAXLEAK_COMPILATION_CACHE=<folder>` (or `off`);
  3. `$XDG_CACHE_HOME/jaxleak/jax`, else `~/.cache/jaxleak/jax`.

Importing jaxleak as a library changes nothing: only `configure` (called by the CLI) touches JAX's config. The
cache is JAX's own (it writes the entries atomically and keys them by program, jax version and backend); deleting
the folder at any time is safe and only costs the next run its compilations.

  >>> resolve(None, {"JAXLEAK_COMPILATION_CACHE": "off"}) is None
  True
  >>> resolve("/tmp/c", {"JAXLEAK_COMPILATION_CACHE": "/elsewhere"})
  '/tmp/c'
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

ENV_VAR = "JAXLEAK_COMPILATION_CACHE"
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
  import jax
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return folder
