"""In-memory HAR data: continuous recordings per subject, and the windows cut from them."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Mapping, Sequence

import numpy as np

from jaxleak.types import is_int


@dataclasses.dataclass(frozen=True)
class Recording:
  """One continuous recording: signals f32[L, channels], labels i32[L] (0 = NULL)."""
  signals: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    for field in ("signals", "labels"):                    # lists are arrays too
      if not isinstance(getattr(self, field), np.ndarray):
        object.__setattr__(self, field, np.asarray(getattr(self, field)))
    if self.signals.ndim != 2 or self.labels.shape != (self.signals.shape[0],):
      raise ValueError(f"a recording needs signals [L, ch] and labels [L]; got {self.signals.shape} and "
                       f"{self.labels.shape}.")
    if not (np.issubdtype(self.signals.dtype, np.floating) or np.issubdtype(self.signals.dtype, np.integer)):
      raise ValueError(f"a recording's signals must be real numbers, got dtype {self.signals.dtype}.")
    if not np.issubdtype(self.labels.dtype, np.integer):
      raise ValueError(f"a recording's labels must be integer class indices (0 = NULL), got dtype "
                       f"{self.labels.dtype}.")
    bad = ~np.isfinite(self.signals).all(axis=1)
    if bad.any():
      raise ValueError(f"a recording's signals hold NaN or inf in {int(bad.sum())} of {len(bad)} rows (the first: "
                       f"row {int(np.argmax(bad))}); fill or drop them first (the WEAR/Wetlab reader fills NaN "
                       f"with 0, as the reference does).")


@dataclasses.dataclass(frozen=True)
class HarDataset:
  """Subjects -> recordings, with class and channel names. Class 0 is NULL where the data has an unlabelled class
  (the watch set has none).

  `loso_validation` optionally maps split index -> held-out subject id (WEAR/Wetlab annotation files); when
  absent, split i holds out the i-th subject in sorted order.
  """
  name: str
  class_names: tuple[str, ...]
  channel_names: tuple[str, ...]
  subjects: Mapping[int, Sequence[Recording]]
  sampling_rate: int = 50
  loso_validation: Mapping[int, int] | None = None

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f"a dataset needs a name (a non-empty string), got {self.name!r}.")
    if not isinstance(self.subjects, Mapping):
      raise ValueError(f"dataset {self.name!r}: subjects must map subject id -> list of recordings, e.g. "
                       f"{{1: [Recording(signals, labels)]}}; got {type(self.subjects).__name__}.")
    if not self.class_names or not self.channel_names or not self.subjects:
      raise ValueError(f"dataset {self.name!r} needs class names, channel names and at least one subject.")
    for field in ("class_names", "channel_names"):
      names = getattr(self, field)
      if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"dataset {self.name!r}: {field} must be a tuple of strings, one per "
                         f"{'class' if field == 'class_names' else 'channel'}; got {names!r}.")
      twice = sorted({n for n in names if list(names).count(n) > 1})
      if twice:
        raise ValueError(f"dataset {self.name!r}: {field} {twice} appear more than once; each must be unique.")
      object.__setattr__(self, field, tuple(names))
    if len(self.class_names) < 2:
      raise ValueError(f"dataset {self.name!r}: {len(self.class_names)} class; label attacks need at least 2 "
                       "(class 0 is NULL).")
    if not is_int(self.sampling_rate) or self.sampling_rate < 1:
      raise ValueError(f"dataset {self.name!r}: sampling_rate must be a positive integer (Hz), got "
                       f"{self.sampling_rate!r}.")
    c, ch = len(self.class_names), len(self.channel_names)
    for s, recordings in self.subjects.items():
      # Subject ids seed each client's sampling (jax.random.fold_in takes a uint32) and name its rows in results.
      if not is_int(s) or not 0 <= s < 2 ** 32:
        raise ValueError(f"dataset {self.name!r}: subject id {s!r} must be an integer in [0, 2**32) (it seeds the "
                         "subject's sampling and names its rows in results); number the subjects 0, 1, ...")
      if isinstance(recordings, Recording) or not all(isinstance(r, Recording) for r in recordings):
        raise ValueError(f"dataset {self.name!r}, subject {s}: give a list of Recording objects, e.g. "
                         f"subjects={{{s}: [Recording(signals, labels)]}}; got {type(recordings).__name__}.")
      for i, r in enumerate(recordings):
        where = f"dataset {self.name!r}, subject {s}, recording {i}"
        if r.signals.shape[1] != ch:
          raise ValueError(f"{where}: {r.signals.shape[1]} signal channels, but {ch} channel_names "
                           f"{tuple(self.channel_names)}.")
        if r.labels.size and (r.labels.min() < 0 or r.labels.max() >= c):
          out = np.unique(r.labels[(r.labels < 0) | (r.labels >= c)])
          raise ValueError(f"{where}: labels {out[:5].tolist()} outside [0, {c}): labels index class_names "
                           f"{tuple(self.class_names)} (0 = NULL).")

    if self.loso_validation is not None:
      held = list(dict(self.loso_validation).values())
      unknown = sorted({v for v in held if v not in self.subjects}, key=str)
      if unknown:
        raise ValueError(f"dataset {self.name!r}: loso_validation holds out subjects {unknown} that are not among "
                         f"its subjects {self.subject_ids}.")
      twice = sorted({v for v in held if held.count(v) > 1})
      if twice:
        raise ValueError(f"dataset {self.name!r}: loso_validation holds out subjects {twice} in more than one "
                         "split; each split holds out its own subject.")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def num_channels(self) -> int:
    return len(self.channel_names)

  @property
  def subject_ids(self) -> tuple[int, ...]:
    return tuple(sorted(self.subjects))

  def loso_splits(self) -> list[tuple[int, tuple[int, ...]]]:
    """Leave-one-subject-out splits as (held-out subject, training subjects)."""
    ids = self.subject_ids
    held = (dict(self.loso_validation) if self.loso_validation is not None
            else {i: s for i, s in enumerate(ids)})
    return [(held[i], tuple(s for s in ids if s != held[i])) for i in sorted(held)]


@dataclasses.dataclass(frozen=True)
class WindowedClients:
  """All windows of all clients in one array, with per-client offsets.

  windows: f32[total, T, ch]; labels: i32[total]; client_of: i32[total] (client index, not subject id);
  offsets: i64[num_clients + 1] (client k owns rows offsets[k]:offsets[k+1]); subject_ids: the subject of
  each client index.
  """
  windows: np.ndarray
  labels: np.ndarray
  offsets: np.ndarray
  subject_ids: tuple[int, ...]
  num_classes: int

  @property
  def num_clients(self) -> int:
    return len(self.subject_ids)

  def client_size(self, k: int) -> int:
    return int(self.offsets[k + 1] - self.offsets[k])

  def client_labels(self, k: int) -> np.ndarray:
    return self.labels[self.offsets[k]:self.offsets[k + 1]]

  def subject_digests(self) -> dict[str, str]:
    """Subject id (as a string) -> '<windows>:<sha256 of the window shape and labels, 16 hex>' for each client.

    What a trained-model checkpoint records about the data it was trained on, so that it is not used on other data
    (another --synthetic_scale, seed or data folder changes the counts or labels). The signal values are left
    out on purpose: a recomputed synthetic signal may differ in the last bit between machines.
    """
    out = {}
    for k, s in enumerate(self.subject_ids):
      y = np.ascontiguousarray(self.client_labels(k), dtype="<i4")
      h = hashlib.sha256(np.asarray(self.windows.shape[1:], "<i8").tobytes() + y.tobytes()).hexdigest()[:16]
      out[str(int(s))] = f"{len(y)}:{h}"
    return out
