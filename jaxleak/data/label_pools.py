"""Labelled example pools and the Eavesdrop paper's federated allocations (sec. IV-B, IV-D1).

A `LabelPool` is every example of a dataset in one array (images or HAR windows). Allocations never copy
examples: a participant is a row of pool indices plus a validity mask, padded to one width M so that all
participants share one compiled local-training function.
"""
from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from jaxleak.types import is_int, seeded_rng


@dataclasses.dataclass(frozen=True)
class LabelPool:
  """x: f32[n, *example_shape]; y: i32[n] in [0, num_classes)."""
  x: np.ndarray
  y: np.ndarray
  num_classes: int
  name: str = ""

  def __post_init__(self):
    for field in ("x", "y"):                                # lists are arrays too
      if not isinstance(getattr(self, field), np.ndarray):
        object.__setattr__(self, field, np.asarray(getattr(self, field)))
    if not is_int(self.num_classes) or self.num_classes < 2:
      raise ValueError(f"a pool needs num_classes, an integer >= 2; got {self.num_classes!r}.")
    if self.x.ndim < 2 or self.x.shape[:1] != self.y.shape or self.y.ndim != 1:
      raise ValueError(f"a pool needs x [n, ...] (one array per example) and y [n]; got {self.x.shape} and "
                       f"{self.y.shape}.")
    if not np.issubdtype(self.y.dtype, np.integer):
      raise ValueError(f"a pool's labels y must be integer class ids, got dtype {self.y.dtype}.")
    if not (np.issubdtype(self.x.dtype, np.floating) or np.issubdtype(self.x.dtype, np.integer)):
      raise ValueError(f"a pool's examples x must be real numbers, got dtype {self.x.dtype}.")
    if not np.all(np.isfinite(self.x)):
      raise ValueError(f"a pool's examples x hold NaN or inf ({self.name or 'unnamed pool'}); fill or drop them "
                       "first.")
    if self.y.size and (self.y.min() < 0 or self.y.max() >= self.num_classes):
      raise ValueError(f"labels must lie in [0, {self.num_classes}); got [{self.y.min()}, {self.y.max()}].")

  @property
  def example_shape(self) -> tuple[int, ...]:
    return tuple(self.x.shape[1:])

  def class_counts(self) -> np.ndarray:
    return np.bincount(self.y, minlength=self.num_classes)

  def indices_of(self, label: int) -> np.ndarray:
    return np.flatnonzero(self.y == label)

  def require_all_classes(self, what: str) -> None:
    empty = np.flatnonzero(self.class_counts() == 0)
    if empty.size:
      raise ValueError(f"{what} ({self.name}) has no examples of classes {empty.tolist()}; every class needs "
                       "some (for synthetic data raise --synthetic_scale, or use another dataset).")

  def subset(self, index: np.ndarray) -> "LabelPool":
    return LabelPool(self.x[index], self.y[index], self.num_classes, self.name)


def split_pool(pool: LabelPool, aux_fraction: float, seed: int) -> tuple[LabelPool, LabelPool]:
  """Stratified split into (participants' pool, attacker's auxiliary/test pool); disjoint examples."""
  if not 0.0 < aux_fraction < 1.0:
    raise ValueError(f"aux_fraction must be in (0, 1), got {aux_fraction}.")
  rng = seeded_rng(seed)
  train, aux = [], []
  for c in range(pool.num_classes):
    idx = rng.permutation(pool.indices_of(c))
    k = int(round(aux_fraction * idx.size))
    aux.append(idx[:k]); train.append(idx[k:])
  return pool.subset(np.sort(np.concatenate(train))), pool.subset(np.sort(np.concatenate(aux)))


def _require_counts(who: str, **values) -> None:
  """Refuses a size that is not an integer (2.5 participants, True, '64'), naming it; the value checks follow."""
  for name, value in values.items():
    if not is_int(value):
      raise TypeError(f"{who}: {name} must be an integer, got {value!r} ({type(value).__name__}).")


def _check_fits_in_memory(num_participants: int, slots: int, num_classes: int) -> None:
  """Refuses, before drawing, participants whose example slots (each drawn row, then the packed index and mask)
  and per-label arrays would exceed this machine's memory: `num_participants=1e20` ended in NumPy's "Maximum
  allowed dimension exceeded", 1e9 would have drawn for days before running out."""
  from jaxleak.data.synthetic import physical_memory_bytes
  total = physical_memory_bytes()
  each = 9 * slots + 112 + 5 * num_classes                  # bytes a participant needs, at the peak of _pack
  if total is not None and num_participants * each > total:
    gib = lambda b: f"{b / 2**30:,.0f}" if b >= 10 * 2**30 else f"{b / 2**30:.2g}"
    raise ValueError(f"num_participants={num_participants:,}: participants of up to {slots:,} examples each need "
                     f"about {gib(num_participants * each)} GiB of memory, more than this machine's {gib(total)} GiB; "
                     f"use at most about {total // each:,} participants.")


def _draw(rng: np.random.Generator, candidates: np.ndarray, k: int) -> np.ndarray:
  """k distinct candidates when there are enough, else with replacement (small stand-in datasets)."""
  return rng.choice(candidates, size=k, replace=candidates.size < k)


@dataclasses.dataclass(frozen=True)
class Allocation:
  """Participants' data as pool indices.

  index: i32[N_p, M] (padding rows point at example 0); mask: bool[N_p, M]; owners: bool[N_p, C], which labels
  each participant *owns* (its main labels, the paper's ground truth for Class Sniffing and Quantity
  Inference); counts: i32[N_p, C], examples of each label it holds (main and other labels).
  """
  index: np.ndarray
  mask: np.ndarray
  owners: np.ndarray
  counts: np.ndarray

  @property
  def num_participants(self) -> int:
    return self.index.shape[0]

  @property
  def width(self) -> int:
    return self.index.shape[1]


def _pack(rows: list[np.ndarray], pool: LabelPool, owners: np.ndarray) -> Allocation:
  width = max(1, max(r.size for r in rows))
  index = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), bool)
  counts = np.zeros((len(rows), pool.num_classes), np.int32)
  for p, r in enumerate(rows):
    index[p, :r.size] = r
    mask[p, :r.size] = True
    counts[p] = np.bincount(pool.y[r], minlength=pool.num_classes)
  return Allocation(index=index, mask=mask, owners=owners, counts=counts)


def allocate_main_labels(pool: LabelPool, num_participants: int, *, main_labels: tuple[int, int] = (3, 5),
                         samples_per_label: int = 64, other_samples: int = 8, seed: int = 0) -> Allocation:
  """The paper's sec. IV-B allocation: each participant draws N_L ~ U{lo..hi} main labels at random, holds
  `samples_per_label` examples of each, plus `other_samples` examples of labels it does not own.

  Examples are drawn without replacement within a participant (with replacement if the class is smaller than
  `samples_per_label`); different participants may share examples (the digits stand-in is too small for
  disjoint shards: 100 participants x 4 labels x 64 examples).
  """
  _require_counts("allocate_main_labels", num_participants=num_participants, samples_per_label=samples_per_label,
                  other_samples=other_samples)
  lo, hi = main_labels
  c = pool.num_classes
  if num_participants <= 0 or samples_per_label <= 0 or other_samples < 0:
    raise ValueError("num_participants and samples_per_label must be positive, other_samples >= 0.")
  if not 1 <= lo <= hi < c:
    raise ValueError(f"main_labels range ({lo}, {hi}) must satisfy 1 <= lo <= hi < num_classes = {c}"
                     + (f" (the paper's (3, 5) is for 10 labels; with {c}: e.g. main_labels=1,{min(2, c - 1)})"
                        if hi >= c >= 2 else "") + ".")
  pool.require_all_classes("the participants' pool")
  _check_fits_in_memory(num_participants, hi * samples_per_label + other_samples, c)
  rng = seeded_rng(seed)
  by_class = [pool.indices_of(k) for k in range(c)]
  owners = np.zeros((num_participants, c), bool)
  rows = []
  for p in range(num_participants):
    labels = rng.choice(c, size=int(rng.integers(lo, hi + 1)), replace=False)
    owners[p, labels] = True
    parts = [_draw(rng, by_class[k], samples_per_label) for k in labels]
    others = np.flatnonzero(~owners[p])
    if other_samples:
      parts += [_draw(rng, by_class[k], 1) for k in rng.choice(others, size=other_samples)]
    rows.append(np.concatenate(parts).astype(np.int32))
  return _pack(rows, pool, owners)


def allocate_dirichlet(pool: LabelPool, num_participants: int, *, alpha: float, samples_per_participant: int = 256,
                       min_owned: int = 16, seed: int = 0) -> Allocation:
  """Non-IID allocation by Dirichlet label proportions: each participant draws q ~ Dir(alpha 1_C) and holds
  Multinomial(samples_per_participant, q) examples of the labels (drawn as in `allocate_main_labels`: distinct
  within a participant where the class allows, shared across participants). Small alpha: few labels each;
  large alpha: close to IID. A participant *owns* a label (the attacks' ground truth) when it holds at least
  `min_owned` examples of it; `counts` has every example.
  """
  _require_counts("allocate_dirichlet", num_participants=num_participants,
                  samples_per_participant=samples_per_participant, min_owned=min_owned)
  c = pool.num_classes
  if num_participants <= 0 or samples_per_participant <= 0 or min_owned <= 0:
    raise ValueError(f"num_participants, samples_per_participant and min_owned must be positive; got "
                     f"{num_participants}, {samples_per_participant} and {min_owned}.")
  if min_owned > samples_per_participant:
    raise ValueError(f"min_owned={min_owned} is more than a participant's {samples_per_participant} samples: no "
                     "participant could own a label; lower min_owned or raise samples_per_participant.")
  if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (np.isfinite(alpha) and alpha > 0):
    raise ValueError(f"dirichlet alpha must be a finite number > 0, got {alpha!r}.")
  pool.require_all_classes("the participants' pool")
  _check_fits_in_memory(num_participants, samples_per_participant, c)
  rng = seeded_rng(seed)
  by_class = [pool.indices_of(k) for k in range(c)]
  rows = []
  for _ in range(num_participants):
    q = rng.dirichlet(np.full(c, float(alpha)))
    n = rng.multinomial(samples_per_participant, q)
    rows.append(np.concatenate([_draw(rng, by_class[k], int(n[k])) for k in range(c)]).astype(np.int32))
  counts = np.stack([np.bincount(pool.y[r], minlength=c) for r in rows])
  return _pack(rows, pool, counts >= min_owned)


def allocate_label_totals(pool: LabelPool, num_participants: int, label_totals: np.ndarray, *,
                          seed: int = 0) -> Allocation:
  """Whole Determination's allocation (sec. IV-D1): label c has label_totals[c] examples in the federation,
  each given to a participant chosen uniformly at random. `owners` marks labels a participant holds at all."""
  given = np.asarray(label_totals)
  if given.dtype.kind not in "iuf" or (given.dtype.kind == "f" and not np.all(np.isfinite(given)
                                                                           & (given == np.round(given)))):
    raise ValueError(f"label_totals must be whole counts of examples per label, got {given.tolist()} "
                     f"({given.dtype}); round them first.")
  _require_counts("allocate_label_totals", num_participants=num_participants)
  if num_participants <= 0:
    raise ValueError(f"allocate_label_totals: num_participants must be positive, got {num_participants}.")
  label_totals = given.astype(np.int64)
  if label_totals.shape != (pool.num_classes,) or (label_totals < 0).any():
    raise ValueError(f"label_totals must be {pool.num_classes} non-negative counts, got {label_totals}.")
  pool.require_all_classes("the participants' pool")
  rng = seeded_rng(seed)
  examples, owner = [], []
  for k, total in enumerate(label_totals):                      # C draws, in label order (the RNG stream)
    examples.append(_draw(rng, pool.indices_of(k), int(total)))
    owner.append(rng.integers(0, num_participants, size=int(total)))
  examples, owner = np.concatenate(examples).astype(np.int32), np.concatenate(owner)
  # A participant's row: its examples label by label, in draw order within a label (a stable sort by owner), then
  # padding. Built without a loop over participants, so a federation too large to hold fails at its first array.
  order = np.argsort(owner, kind="stable")
  owner, examples = owner[order], examples[order]
  held = np.bincount(owner, minlength=num_participants)
  slot = np.arange(owner.size) - (np.cumsum(held) - held)[owner]
  index = np.zeros((num_participants, max(1, int(held.max(initial=0)))), np.int32)
  mask = np.zeros(index.shape, bool)
  index[owner, slot], mask[owner, slot] = examples, True
  counts = np.zeros((num_participants, pool.num_classes), np.int32)
  np.add.at(counts, (owner, pool.y[examples]), 1)
  return Allocation(index=index, mask=mask, owners=counts > 0, counts=counts)


def quantity_groups(num_classes: int, seed: int, factors: tuple[float, ...] = (1.0, 1 / 4, 1 / 5)) -> np.ndarray:
  """Random split of the labels into len(factors) groups of near-equal size (sec. IV-D1: Q, Q/4, Q/5).
  Returns i32[C], the group of each label."""
  if not factors or not all(isinstance(f, numbers.Real) and math.isfinite(f) and f > 0 for f in factors):
    raise ValueError(f"factors must be one or more finite group sizes > 0 relative to Q, got {tuple(factors)}.")
  if num_classes < len(factors):
    raise ValueError(f"{num_classes} classes cannot form {len(factors)} non-empty groups.")
  rng = seeded_rng(seed)
  groups = np.arange(num_classes) % len(factors)
  return rng.permutation(groups).astype(np.int32)


def aux_per_label(pool: LabelPool, samples_per_label: int, *, seed: int = 0) -> np.ndarray:
  """The attacker's auxiliary data: i32[C, n] pool indices, row c holding n examples of label c."""
  if not is_int(samples_per_label) or samples_per_label < 1:
    raise ValueError(f"samples_per_label must be a positive integer (the attacker's examples of each label), got "
                     f"{samples_per_label!r}.")
  pool.require_all_classes("the attacker's auxiliary pool")
  rng = seeded_rng(seed)
  return np.stack([_draw(rng, pool.indices_of(c), samples_per_label) for c in range(pool.num_classes)]
                  ).astype(np.int32)


def pad_allocation(allocation: Allocation, width: int) -> Allocation:
  """The same allocation padded to `width` >= its width (so runs with different allocations share one
  compiled round function)."""
  if not isinstance(allocation, Allocation):
    raise TypeError(f"pad_allocation: allocation must be an Allocation (from allocate_main_labels and the like), "
                    f"got {type(allocation).__name__}.")
  _require_counts("pad_allocation", width=width)
  extra = width - allocation.width
  if extra < 0:
    raise ValueError(f"cannot pad an allocation of width {allocation.width} to {width}.")
  if extra == 0:
    return allocation
  pad = ((0, 0), (0, extra))
  return dataclasses.replace(allocation, index=np.pad(allocation.index, pad), mask=np.pad(allocation.mask, pad))
