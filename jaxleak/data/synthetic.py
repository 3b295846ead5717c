"""Synthetic HAR streams: per-subject continuous recordings of activity segments with a majority NULL class.

Each subject's stream alternates NULL gaps and activity segments (temporal consistency: sequential batches are
often label-exclusive). Activities are drawn with imbalanced frequencies. The signal of class k on channel j is a
sinusoid with class-specific frequency, amplitude and offset plus subject-specific gain and Gaussian noise, so a
model can learn the classes. Deterministic for a given seed.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os

import numpy as np

from jaxleak.data.dataset import HarDataset, Recording
from jaxleak.types import is_int, seeded_rng


@dataclasses.dataclass(frozen=True)
class SyntheticPreset:
  num_subjects: int
  num_channels: int
  num_classes: int            # including NULL
  windows_per_subject: int    # approximate, at window 50 / stride 25
  null_fraction: float = 0.35
  mean_segment_s: float = 40.0

  def __post_init__(self):
    for name, least in (("num_subjects", 1), ("num_channels", 1), ("num_classes", 2), ("windows_per_subject", 1)):
      value = getattr(self, name)
      if not is_int(value) or value < least:
        raise ValueError(f"SyntheticPreset.{name} must be an integer >= {least}, got {value!r}.")
    for name, ok, allowed in (("null_fraction", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
                              ("mean_segment_s", lambda v: v > 0, "> 0 (seconds)")):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"SyntheticPreset.{name} must be a finite number {allowed}, got {value!r}.")


PRESETS = {
    "wear": SyntheticPreset(num_subjects=18, num_channels=12, num_classes=19, windows_per_subject=6000,
                            null_fraction=0.25, mean_segment_s=60.0),
    "wetlab": SyntheticPreset(num_subjects=22, num_channels=3, num_classes=9, windows_per_subject=4000,
                              null_fraction=0.5, mean_segment_s=20.0),
    "tiny": SyntheticPreset(num_subjects=4, num_channels=3, num_classes=5, windows_per_subject=300,
                            null_fraction=0.35, mean_segment_s=10.0),
}


def make_synthetic(preset: str | SyntheticPreset = "wetlab", *, scale: float = 1.0, seed: int = 0,
                   sampling_rate: int = 50) -> HarDataset:
  """Synthetic HAR dataset shaped like a preset ('wear', 'wetlab', 'tiny').

  Args:
    preset: preset name or a SyntheticPreset.
    scale: multiplies the recording length of every subject (e.g. 0.1 for quick runs).
    seed: generator seed.
    sampling_rate: samples per second (Hz) of the recordings, a positive integer.
  """
  if isinstance(preset, str):
    if preset not in PRESETS:
      raise ValueError(f"unknown synthetic preset {preset!r}; valid: {sorted(PRESETS)}.")
    name, p = f"synthetic_{preset}", PRESETS[preset]
  elif isinstance(preset, SyntheticPreset):
    name, p = "synthetic", preset
  else:
    raise TypeError(f"preset must be a preset name ({', '.join(sorted(PRESETS))}) or a SyntheticPreset, got "
                    f"{type(preset).__name__}.")
  if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
    raise ValueError(f"scale must be a finite number > 0, got {scale!r}.")
  if not is_int(sampling_rate) or sampling_rate < 1:
    # 0 made every segment 0 samples long: the generator never reached the end of a recording (a hang).
    raise ValueError(f"sampling_rate must be a positive integer (Hz), got {sampling_rate!r}.")
  length = max(int(p.windows_per_subject * 25 * scale) + 25, 60)
  _check_fits_in_memory(p, length, scale)
  rng = seeded_rng(seed)
  c, ch, fs = p.num_classes, p.num_channels, sampling_rate
  freq = rng.uniform(0.3, 4.0, (c, ch))
  amp = rng.uniform(0.2, 1.5, (c, ch))
  offset = rng.normal(0.0, 0.7, (c, ch))
  amp[0], offset[0] = 0.1, 0.0                               # NULL: near-rest signal
  activity_p = rng.dirichlet(np.full(c - 1, 1.5))            # imbalanced activity frequencies
  subjects = {}
  for s in range(p.num_subjects):
    labels = np.zeros(length, np.int32)
    pos = 0
    while pos < length:
      seg = max(int(rng.exponential(p.mean_segment_s) * fs), fs)
      if rng.random() >= p.null_fraction:
        labels[pos:pos + seg] = 1 + rng.choice(c - 1, p=activity_p)
      pos += seg
    t = np.arange(length) / fs
    gain = rng.uniform(0.8, 1.2, ch)
    phase = rng.uniform(0, 2 * np.pi, (c, ch))
    signals = (amp[labels] * np.sin(2 * np.pi * freq[labels] * t[:, None] + phase[labels]) + offset[labels])
    signals = signals * gain + rng.normal(0.0, 0.15, (length, ch))
    subjects[s] = [Recording(signals=signals.astype(np.float32), labels=labels)]
  class_names = ("NULL",) + tuple(f"activity_{k}" for k in range(1, c))
  return HarDataset(name=name, class_names=class_names, channel_names=tuple(f"ch{j}" for j in range(ch)),
                    subjects=subjects, sampling_rate=fs)


def physical_memory_bytes() -> int | None:
  """This machine's memory, or the container's limit where that is lower (cgroup v2 or v1); None if unknown."""
  try:
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (AttributeError, ValueError, OSError):       # not a POSIX system that reports it
    return None
  for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(limit_file, encoding="ascii") as f:
        limit = f.read().strip()
    except OSError:
      continue
    if limit.isdigit():                                 # "max" (v2) or a huge number (v1): no limit
      total = min(total, int(limit))
  return total


def _check_fits_in_memory(p: SyntheticPreset, length: int, scale: float) -> None:
  """Refuses, before allocating, a dataset whose recordings (f32), their windows (twice the samples: stride = half
  a window) and the generator's float64 temporaries for one subject would exceed this machine's memory: at
  `--synthetic_scale=1e6` the process was killed by the kernel's out-of-memory killer instead of a message."""
  total = physical_memory_bytes()
  if total is None:
    return
  need = 3 * 4 * p.num_subjects * length * p.num_channels + 6 * 8 * length * p.num_channels   # data + temporaries
  if need > total:
    fits = scale * total / need
    gib = lambda b: f"{b / 2**30:,.0f}" if b >= 10 * 2**30 else f"{b / 2**30:.2g}"
    raise ValueError(f"scale={scale:g} makes recordings of {length:,} samples per subject: about {gib(need)} GiB of "
                     f"memory with their windows, more than this machine's {gib(total)} GiB. Use a scale of at most "
                     f"about {fits:.3g}.")
