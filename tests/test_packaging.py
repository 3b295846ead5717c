"""pyproject.toml and constraints.txt agree: every dependency (core and extras) is pinned within its range."""
import os
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins() -> dict:
  pins = {}
  for line in open(os.path.join(ROOT, "constraints.txt")):
    line = line.split("#")[0].strip()
    if line:
      name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line).groups()
      assert canonicalize_name(name) not in pins, f"{name} pinned twice"
      pins[canonicalize_name(name)] = version
  return pins


def test_every_dependency_is_pinned_within_its_range():
  project = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]
  requirements = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values()
                                                  for r in extra]
  pins = _pins()
  for text in requirements:
    req = Requirement(text)
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is a dependency but not pinned in constraints.txt"
    assert req.specifier.contains(pins[name], prereleases=True), \
        f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}"


def test_the_readme_names_the_constraints_file():
  assert "pip install -c constraints.txt" in open(os.path.join(ROOT, "README.md")).read()
