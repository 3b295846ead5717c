"""The seglearn smartwatch set (`--dataset=watch`): a small, balanced, real IMU control (optional extra `watch`).

seglearn (BSD-3) ships `seglearn/data/watch_dataset.npy`: 140 recordings of shoulder physiotherapy exercises
(10 subjects x 7 exercises x 2 sides, 947-2,618 samples each at 50 Hz), 6 channels (ax, ay, az, wx, wy, wz) from a
wrist-worn smartwatch, one exercise label per recording. Every subject has every exercise equally often and there
is no NULL class and no continuous session, so it is the IID control next to HAPT's long, imbalanced, NULL-heavy
recordings: class 0 here is the exercise PEN, not NULL, and sequential batches run through one exercise after
another in the file's order.

The file is a NumPy .npy holding a pickled dict. seglearn is never imported (its import pulls scikit-learn) and the
file is never unpickled with the plain unpickler: only the NumPy globals an object array needs are resolved.
"""
from __future__ import annotations

import importlib.util
import os
import pickle

import numpy as np

from jaxleak.data.dataset import HarDataset, Recording
from jaxleak.data.safe_pickle import AllowListUnpickler, check_file_size

PACKAGE = "seglearn"
PIP_NAME = "seglearn==1.2.5"
RELATIVE_PATH = os.path.join("data", "watch_dataset.npy")
MAX_FILE_BYTES = 64 * 2 ** 20                         # the real file is 18,118,091 bytes
NUM_CHANNELS = 6
_REINSTALL = f"reinstall it with `pip install --force-reinstall {PIP_NAME}`"


class WatchFileError(ValueError):
  """The watch file is missing its expected form (too big, not .npy, refused by the restricted unpickler)."""


class _WatchUnpickler(AllowListUnpickler):
  what = "the seglearn watch file"
  refusal = f"The file may be corrupt or tampered with; {_REINSTALL}."


def watch_path() -> str:
  """The path of the shipped file; ImportError naming the extra when seglearn is not installed."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"the watch dataset needs the optional extra 'watch': pip install 'jaxleak[watch]' (or pip "
                      f"install {PIP_NAME}); seglearn is not imported, only its data file is read.")
  return os.path.join(list(spec.submodule_search_locations)[0], RELATIVE_PATH)


def load_raw(path: str) -> dict:
  """The file's dict through the restricted unpickler, after checking its size and its .npy header."""
  check_file_size(path, MAX_FILE_BYTES, WatchFileError, "the seglearn watch file", _REINSTALL)
  with open(path, "rb") as f:
    try:
      version = np.lib.format.read_magic(f)
      shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                         else np.lib.format.read_array_header_2_0(f))
    except ValueError as e:
      raise WatchFileError(f"{path}: not a NumPy .npy file ({e}); {_REINSTALL}.") from None
    if shape != () or dtype != np.dtype(object):
      raise WatchFileError(f"{path}: holds an array of shape {shape} and dtype {dtype}, not the pickled dict the "
                           f"watch file is; {_REINSTALL}.")
    try:
      array = _WatchUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
      raise WatchFileError(f"{path}: not a watch file this loader accepts ({type(e).__name__}: {e}); "
                           f"{_REINSTALL}.") from None
  raw = array.item() if isinstance(array, np.ndarray) and array.shape == () else array
  if not isinstance(raw, dict):
    raise WatchFileError(f"{path}: expected a dict of arrays, got {type(raw).__name__}; {_REINSTALL}.")
  return raw


def _field(raw: dict, key: str, path: str):
  if key not in raw:
    raise WatchFileError(f"{path}: no {key!r} entry (it has {sorted(map(str, raw))}); {_REINSTALL}.")
  return raw[key]


def load_watch(path: str | None = None) -> HarDataset:
  """The watch set as a HarDataset: subjects 1..10, each a list of 14 one-exercise Recordings in file order,
  7 classes (the file's exercise names), signals f32, no NULL class."""
  path = path or watch_path()
  raw = load_raw(path)
  recordings, labels, subjects = (_field(raw, k, path) for k in ("X", "y", "subject"))
  class_names = tuple(str(n) for n in _field(raw, "y_labels", path))
  channel_names = tuple(str(n) for n in _field(raw, "X_labels", path))
  labels, subjects = np.asarray(labels), np.asarray(subjects)
  n = len(recordings) if isinstance(recordings, (list, tuple)) else -1
  if n < 1 or labels.shape != (n,) or subjects.shape != (n,):
    raise WatchFileError(f"{path}: expected a list of recordings with one label and one subject each; got "
                         f"{n if n >= 0 else type(recordings).__name__} recordings, labels {labels.shape}, "
                         f"subjects {subjects.shape}; {_REINSTALL}.")
  if len(channel_names) != NUM_CHANNELS or not all(np.issubdtype(a.dtype, np.integer) for a in (labels, subjects)):
    raise WatchFileError(f"{path}: expected {NUM_CHANNELS} channel names and integer labels and subjects; "
                         f"{_REINSTALL}.")
  by_subject: dict[int, list[Recording]] = {}
  for i, (x, y, s) in enumerate(zip(recordings, labels.tolist(), subjects.tolist())):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != NUM_CHANNELS or not np.issubdtype(x.dtype, np.floating):
      raise WatchFileError(f"{path}: recording {i} has shape {x.shape} and dtype {x.dtype}, not float "
                           f"[samples, {NUM_CHANNELS}]; {_REINSTALL}.")
    if not 0 <= y < len(class_names):
      raise WatchFileError(f"{path}: recording {i} has label {y}, outside the {len(class_names)} exercises "
                           f"{class_names}; {_REINSTALL}.")
    by_subject.setdefault(int(s), []).append(
        Recording(signals=x.astype(np.float32), labels=np.full(len(x), y, np.int32)))
  return HarDataset(name="watch", class_names=class_names, channel_names=channel_names, subjects=by_subject)
