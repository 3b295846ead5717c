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
