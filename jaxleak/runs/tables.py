"""Plain-text tables for the terminal."""
from __future__ import annotations

from typing import Sequence


#: A cell with nothing to score (NaN: a rate over no rounds, a class never present, ...); the CSV files keep nan.
UNDEFINED = "-"
UNDEFINED_NOTE = "-: nothing to score (no round, trial, update or class of that kind); the CSV files hold nan."


def pct(mean: float, std: float) -> str:
  """'12.34% (±  5.67)' from fractions."""
  return f"{100 * mean:6.2f}% (± {100 * std:5.2f})"


def format_table(rows: Sequence[dict], columns: Sequence[str], title: str = "") -> str:
  """Plain-text table: rows of dicts with string values, left-aligned columns.

  >>> print(format_table([{"a": "1", "b": "xyz"}], ["a", "b"]))
  a  b
  ------
  1  xyz
  """
  widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
  line = "  ".join(c.ljust(widths[c]) for c in columns)
  out = ([title] if title else []) + [line, "-" * len(line)]
  out += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
  return "\n".join(out)
