"""Sliding windows (never across recordings) and clients per subject."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxleak.data.dataset import HarDataset, Recording, WindowedClients

WINDOW = 50
STRIDE = 25


def window_starts(length: int, window: int = WINDOW, stride: int = STRIDE) -> np.ndarray:
  """Start rows of the windows of one recording: 0, stride, ... while start + window <= length.

  Every full window that fits is kept (44,823 HAPT windows). The TAL/HAR reference code stops at
  start < length - window, dropping the last window when (length - window) is a multiple of the stride; see
  BUILD_NOTES.md.
  """
  if length < window:
    return np.zeros((0,), np.int64)
  return np.arange(0, length - window + 1, stride, dtype=np.int64)


def window_recording(rec: Recording, window: int = WINDOW, stride: int = STRIDE):
  """-> windows f32[n, window, ch], labels i32[n] (label of each window's last sample)."""
  starts = window_starts(rec.signals.shape[0], window, stride)
  idx = starts[:, None] + np.arange(window)[None, :]
  return rec.signals[idx].astype(np.float32), rec.labels[starts + window - 1].astype(np.int32)


def make_clients(dataset: HarDataset, subject_ids: Sequence[int] | None = None, window: int = WINDOW,
                 stride: int = STRIDE) -> WindowedClients:
  """One client per subject: the windows of all its recordings, in temporal order."""
  ids = tuple(dataset.subject_ids if subject_ids is None else subject_ids)
  unknown = [s for s in ids if s not in dataset.subjects]
  if unknown:
    raise ValueError(f"unknown subject ids {unknown}; {dataset.name} has {list(dataset.subject_ids)}.")
  xs, ys, sizes = [], [], []
  for s in ids:
    parts = [window_recording(r, window, stride) for r in dataset.subjects[s]]
    x = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, window, dataset.num_channels), np.float32)
    y = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0,), np.int32)
    xs.append(x); ys.append(y); sizes.append(len(y))
  offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
  return WindowedClients(windows=np.concatenate(xs), labels=np.concatenate(ys), offsets=offsets,
                         subject_ids=ids, num_classes=dataset.num_classes)
