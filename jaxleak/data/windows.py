"""Sliding windows (never across recordings) and clients per subject."""
from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from jaxleak.data.dataset import HarDataset, Recording, WindowedClients
from jaxleak.data.samplers import usable_windows
from jaxleak.types import seeded_rng

WINDOW = 50
STRIDE = 25


def window_starts(length: int, window: int = WINDOW, stride: int = STRIDE) -> np.ndarray:
  """Start rows of the windows of one recording: 0, stride, ... while start + window <= length.

  Every full window that fits is kept (44,823 HAPT windows). The TAL/HAR reference code stops at
  start < length - window, dropping the last window when (length - window) is a multiple of the stride; see
  BUILD_NOTES.md.
  """
  for name, value in (("window", window), ("stride", stride)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"{name} must be a positive integer (samples), got {value!r}.")
  if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 0:
    raise ValueError(f"length must be an integer >= 0 (samples in the recording), got {length!r}.")
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
  if not ids:
    raise ValueError(f"subject_ids is empty; give at least one of {list(dataset.subject_ids)} (None = all).")
  repeated = sorted({s for s in ids if ids.count(s) > 1})
  if repeated:
    raise ValueError(f"subject ids {repeated} are given more than once; each subject is one client.")
  unknown = [s for s in ids if s not in dataset.subjects]
  if unknown:
    raise ValueError(f"unknown subject ids {unknown}; {dataset.name} has {list(dataset.subject_ids)}.")
  xs, ys, sizes = [], [], []
  for s in ids:
    parts = [window_recording(r, window, stride) for r in dataset.subjects[s]]
    x = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, window, dataset.num_channels), np.float32)
    y = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0,), np.int32)
    xs.append(x); ys.append(y); sizes.append(len(y))
  if not sum(sizes):
    longest = max((len(r.labels) for s in ids for r in dataset.subjects[s]), default=0)
    raise ValueError(f"make_clients: no windows: every recording of the chosen subjects of {dataset.name} is shorter "
                     f"than window={window} samples (the longest has {longest:,}); lower the window.")
  offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
  return WindowedClients(windows=np.concatenate(xs), labels=np.concatenate(ys), offsets=offsets,
                         subject_ids=ids, num_classes=dataset.num_classes)


def clients_holding(clients: WindowedClients, min_windows: int, strategy: str | None = None
                    ) -> tuple[WindowedClients, list[tuple[int, int]]]:
  """The clients that hold at least `min_windows` windows, their ids, windows and order kept; and (id, windows) of
  each client left out. A Dirichlet re-deal (`repartition_dirichlet`) with a small alpha leaves some clients too
  few windows for one update of N. With `strategy`, the windows its sampler draws from (for 'balanced' its pool,
  `samplers.usable_windows`), in the test and in the list."""
  sizes = np.diff(clients.offsets)
  usable = (sizes if strategy is None else
            np.asarray([usable_windows(strategy, clients.client_labels(k)) for k in range(clients.num_clients)]))
  kept = np.flatnonzero(usable >= min_windows)
  left_out = [(clients.subject_ids[k], int(usable[k])) for k in np.flatnonzero(usable < min_windows)]
  if not left_out:
    return clients, []
  rows = np.flatnonzero(np.repeat(usable >= min_windows, sizes))    # the windows of the clients kept, in order
  offsets = np.concatenate([[0], np.cumsum(sizes[kept])]).astype(np.int64)
  return WindowedClients(windows=clients.windows[rows], labels=clients.labels[rows], offsets=offsets,
                         subject_ids=tuple(clients.subject_ids[k] for k in kept),
                         num_classes=clients.num_classes), left_out


def repartition_dirichlet(clients: WindowedClients, num_clients: int, alpha: float, seed: int) -> WindowedClients:
  """The same windows dealt to `num_clients` new clients by Dirichlet label proportions (the usual non-IID split,
  Hsu et al. 2019): each class's windows are shuffled and cut among the clients in proportions p ~ Dir(alpha 1);
  every window goes to exactly one client; within a client windows keep their original (temporal) order. Clients
  left without windows are dropped. New client ids are 0..k-1 (`subject_ids`), no longer subjects."""
  if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients <= 0:
    raise ValueError(f"dirichlet_clients must be a positive integer, got {num_clients!r}.")
  if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (np.isfinite(alpha) and alpha > 0):
    raise ValueError(f"dirichlet_alpha must be a finite number > 0, got {alpha!r}.")
  rng = seeded_rng(seed)
  owner = np.empty(len(clients.labels), np.int64)
  for c in range(clients.num_classes):
    idx = rng.permutation(np.flatnonzero(clients.labels == c))
    if idx.size == 0:
      continue
    cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, float(alpha))))[:-1] * idx.size).astype(np.int64)
    for k, part in enumerate(np.split(idx, cuts)):
      owner[part] = k
  order = np.lexsort((np.arange(len(owner)), owner))          # by client, then original position
  sizes = np.bincount(owner, minlength=num_clients)
  kept = np.flatnonzero(sizes)
  offsets = np.concatenate([[0], np.cumsum(sizes[kept])]).astype(np.int64)
  return WindowedClients(windows=clients.windows[order], labels=clients.labels[order], offsets=offsets,
                         subject_ids=tuple(range(len(kept))), num_classes=clients.num_classes)
