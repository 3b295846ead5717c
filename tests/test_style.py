"""House style that review keeps missing: Python lines of at most 120 characters, the project's width."""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_python_lines_are_at_most_120_characters():
  long = []
  for folder in ("jaxleak", "tests", "benchmarks", "experiments"):
    for path in sorted((ROOT / folder).rglob("*.py")):
      for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if len(line) > 120:
          long.append(f"{path.relative_to(ROOT)}:{n} ({len(line)} characters)")
  assert not long, "lines over 120 characters: " + ", ".join(long[:10])


def test_no_signature_defaults_to_the_environment():
  """Found 2026-12-04 (sixteenth session): `compile_cache.resolve(flag_value, environ=os.environ)`: help() and any
  docs build printed the whole environment, credentials included, as the default's repr."""
  import importlib
  import inspect
  import os
  import pkgutil

  import jaxleak
  found = []
  for info in pkgutil.walk_packages(jaxleak.__path__, "jaxleak."):
    module = importlib.import_module(info.name)
    for name, obj in vars(module).items():
      if getattr(obj, "__module__", None) != info.name:
        continue
      functions = [obj] + ([m for m in vars(obj).values() if inspect.isfunction(m)] if inspect.isclass(obj) else [])
      for f in filter(callable, functions):
        try:
          params = inspect.signature(f).parameters.values()
        except (TypeError, ValueError):
          continue
        found += [f"{info.name}.{name}({p.name}=...)" for p in params if p.default is os.environ]
  assert not found, found
