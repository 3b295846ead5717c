"""Restricted unpickling for the data files that ship as pickles (HAPT, the seglearn watch set).

The plain unpickler runs whatever a file names; these only resolve globals on an explicit allow-list and raise
`pickle.UnpicklingError` for anything else, so a crafted or tampered file cannot call arbitrary code.
"""
from __future__ import annotations

import _codecs
import os
import pickle
from typing import Any, Mapping

import numpy as np


def _numpy_reconstruct():
  try:
    from numpy._core.multiarray import _reconstruct
  except ImportError:                                     # numpy < 2
    from numpy.core.multiarray import _reconstruct
  return _reconstruct


# An allow-list, not repeated code: what a pickled NumPy array references, in both module spellings
# (numpy < 2 / >= 2), plus the codec numpy uses for the raw bytes of arrays pickled by Python 2.
NUMPY_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,
}


class AllowListUnpickler(pickle.Unpickler):
  """An unpickler that resolves only `allowed` globals: {(module, name): object}.

  `refusal` is appended to the error for any other global: what the user should do (e.g. reinstall the file).
  """

  allowed: Mapping[tuple[str, str], Any] = NUMPY_GLOBALS
  what = "this file"
  refusal = ""

  def find_class(self, module, name):
    try:
      return self.allowed[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(f"refusing global {module}.{name}: not on the allow-list for {self.what}. "
                                   f"{self.refusal}".rstrip()) from None


def check_file_size(path: str, max_bytes: int, error: type[Exception], what: str, fix: str) -> None:
  """Raises `error` unless `path` is a regular file of at most `max_bytes` (checked before anything reads it).

  `what` names the file in the message ("the HAPT file"), `fix` says what to do ("reinstall it with ...").
  """
  if not os.path.isfile(path):
    raise error(f"{path}: missing or not a regular file, expected {what}; {fix}.")
  size = os.path.getsize(path)
  if size > max_bytes:
    raise error(f"{path}: {size:,} bytes on disk, more than the {max_bytes:,} {what} may have; {fix}.")
