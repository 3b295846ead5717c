"""The layers of BUILD_NOTES.md ("Layers"): what each part of jaxleak may import from jaxleak, checked on the source.

Pure layers (leaves, attacks, models, data, federated) never import orchestration, storage or the command line,
so a researcher importing an attack or an update function pulls in no files, flags or state.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jaxleak"
LEAVES = {"types", "head", "metrics", "privacy", "flops", "interop", "accounting"}
ROOT = "jaxleak"                        # the package's __init__: re-exports types and __version__ only

# unit -> the units it may import (besides itself and the root).
ALLOWED = {
    "types": set(),
    "head": {"types"},
    "metrics": {"types"},
    "privacy": {"types"},
    "flops": set(),
    "interop": {"types"},
    "accounting": set(),
    "compile_cache": set(),
    "gpu_numerics": set(),
    "attacks": {"types", "head"},
    "models": {"types"},
    "data": {"types"},                  # types: is_concrete / check_prng_key only
    "federated": {"types", "head", "privacy", "models", "attacks"},   # attacks: RLU's basis type only
    "storage": {"gpu_numerics"},     # provenance: whether XLA:GPU was asked for determinism
    # runs: a study's Ray worker sets its process up as cli.run does (compilation cache, GPU determinism)
    "runs": LEAVES | {"attacks", "models", "data", "federated", "storage", "compile_cache", "gpu_numerics"},
    "cli": LEAVES | {"attacks", "models", "data", "federated", "storage", "runs", "compile_cache", "gpu_numerics"},
    "report": {"cli", "runs"},           # python -m jaxleak.report
    "study": {"cli", "runs"},            # python -m jaxleak.study
    "__main__": set(),                   # python -m jaxleak: lists the commands, imports nothing
}


def _unit(dotted: str) -> str:
  parts = dotted.split(".")
  return parts[1] if len(parts) > 1 else ROOT


def _imports(path: pathlib.Path) -> set[str]:
  """The jaxleak units a module imports (at any depth of the file, lazy imports included)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {_unit(a.name) for a in node.names if a.name.split(".")[0] == "jaxleak"}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      if node.module == "jaxleak":       # from jaxleak import privacy, LastLayerGrads
        found |= {a.name if (PACKAGE / f"{a.name}.py").exists() or (PACKAGE / a.name).is_dir() else ROOT
                  for a in node.names}
      elif node.module.split(".")[0] == "jaxleak":
        found.add(_unit(node.module))
      elif node.module.split(".")[0] in ("experiments", "benchmarks"):
        found.add(node.module.split(".")[0])
    elif isinstance(node, ast.ImportFrom) and node.level > 0:
      raise AssertionError(f"{path}: relative import; jaxleak uses absolute imports")
  return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_rule():
  units = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in MODULES} - {"__init__"}
  assert units == set(ALLOWED), f"units without a rule (add them to ALLOWED and BUILD_NOTES): {units ^ set(ALLOWED)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_what_its_layer_may(path):
  unit = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
  if unit == "__init__":
    assert _imports(path) <= {"types"}
    return
  extra = _imports(path) - ALLOWED[unit] - {unit, ROOT}
  assert not extra, f"{path.relative_to(PACKAGE)} ({unit}) imports {sorted(extra)}; allowed: {sorted(ALLOWED[unit])}"
