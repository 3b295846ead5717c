"""Every Python example in the README runs as pasted."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKS = re.findall(r"```python\n(.*?)```", open(os.path.join(ROOT, "README.md")).read(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  exec(compile(BLOCKS[index].replace("/tmp/jaxleak_demo", str(tmp_path / "demo")), f"README block {index}", "exec"),
       {})
  capsys.readouterr()


def test_readme_has_examples():
  assert len(BLOCKS) >= 4
