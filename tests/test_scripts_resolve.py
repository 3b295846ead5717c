"""Every jaxleak name the benchmark and experiment scripts use exists: `from jaxleak.x import y` and `alias.attr`
where alias is a jaxleak module. Most benchmarks are too slow to run in the suite; this catches the common way
they rot (a library name renamed or removed) without running them."""
import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("experiments/*.py")])


def _jaxleak_uses(tree: ast.AST):
  """Yields (line, module, attribute or None) for every jaxleak name the script reads."""
  aliases = {}                                                 # local name -> jaxleak module path
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name.split(".")[0] == "jaxleak":
          aliases[a.asname or a.name] = a.name
          yield node.lineno, a.name, None
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
        node.module.split(".")[0] == "jaxleak":
      for a in node.names:
        try:                                                   # a submodule imported by name
          importlib.import_module(f"{node.module}.{a.name}")
          aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        except ModuleNotFoundError:
          yield node.lineno, node.module, a.name
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
      yield node.lineno, aliases[node.value.id], node.attr


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_names_exist_in_the_library(path):
  tree = ast.parse(path.read_text())
  missing = []
  for line, module, attr in _jaxleak_uses(tree):
    mod = importlib.import_module(module)
    if attr is not None and not hasattr(mod, attr):
      try:
        importlib.import_module(f"{module}.{attr}")              # a submodule reached as an attribute
      except ModuleNotFoundError:
        missing.append(f"line {line}: {module}.{attr}")
  assert not missing, f"{path.relative_to(ROOT)} uses names jaxleak does not have: {missing}"


def test_the_check_sees_a_missing_name():
  tree = ast.parse("from jaxleak import attacks as A\nfrom jaxleak.metrics import lnacc_typo\nA.ebi\nA.no_such\n")
  uses = list(_jaxleak_uses(tree))
  assert (2, "jaxleak.metrics", "lnacc_typo") in uses and (4, "jaxleak.attacks", "no_such") in uses
