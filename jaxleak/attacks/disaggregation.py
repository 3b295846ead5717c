"""Each client's labels from securely aggregated rounds whose cohorts change: least squares over the rounds.

Under secure aggregation the server sees only the mean update of each round's cohort, and a label attack reads that
mean as the summed label counts of the round's K clients. When the server itself chooses who is in which round (as
FedAvg's client selection does) and changes the cohorts from round to round, it knows the participation matrix
M (rounds x clients, 1 where a client took part), and the rounds' counts A (rounds x classes) are, up to the
attack's error and each update's own sampling, M P, where row i of P is client i's expected counts per update.
Solving for P in the least-squares sense gives the server every client's label profile although it never saw one
client's update: the gradient disaggregation of Lam et al. (ICML 2021), here on label counts.

With cohorts dealt once and kept (`jaxleak.runs.leakage.aggregation.deal_cohorts`) the members of a cohort have
equal columns of M, and the minimum-norm solution gives each of them 1/K of the cohort's mean round: nothing is
learnt beyond the even split (tested).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxleak.attacks._common import INVALID_COUNT, check_num_samples

_SNAP = 9   # decimals: profiles and shares closer than 1e-9 windows are equal (float64 round-off is far below)


def disaggregate_rounds(round_counts, participation, num_samples: int) -> jnp.ndarray:
  """Each client's expected label counts per update, from the counts an attack read in aggregated rounds.

  Host-side (concrete inputs, checked first; not for jit or vmap): it reads a whole federation's rounds once.

  Args:
    round_counts: i32[R, C], one attack's counts for each aggregated round (a round of K clients' updates of N
      windows each must sum to K N, as attack outputs do); rows holding `INVALID_COUNT` (the attack returned
      none) are left out.
    participation: [R, n] of 0/1 (bool or numbers): which of the n clients took part in each round.
    num_samples: N, windows per client update (a Python int).

  Returns:
    i32[n, C]: row i is client i's least-squares profile P_i (minimum-norm solution of M P = A over the valid
    rounds, in float64), negatives set to 0, scaled to sum to N and rounded by largest remainder (ties, shares
    within 1e-9 of each other, to the lower class). A client in no valid round, or whose profile has no positive
    count, gets a row of `INVALID_COUNT`.

  >>> import numpy as np
  >>> p = np.array([[4, 0], [1, 3], [0, 4]])                  # three clients, N = 4
  >>> m = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]])          # rounds of two, cohorts changing
  >>> disaggregate_rounds(m @ p, m, 4).tolist()
  [[4, 0], [1, 3], [0, 4]]
  """
  n = check_num_samples(num_samples, "disaggregate_rounds", traced_ok=False)
  counts = np.asarray(round_counts)
  part = np.asarray(participation)
  if counts.ndim != 2 or part.ndim != 2 or counts.shape[0] != part.shape[0]:
    raise ValueError(f"disaggregate_rounds: round_counts must be [R, C] and participation [R, n] with the same R "
                     f"(one row per aggregated round); got {counts.shape} and {part.shape}.")
  if not np.issubdtype(counts.dtype, np.integer):
    raise ValueError(f"disaggregate_rounds: round_counts must be integer counts (an attack's output), got "
                     f"{counts.dtype}.")
  if part.dtype != bool and not np.all((part == 0) | (part == 1)):
    raise ValueError("disaggregate_rounds: participation must hold 0 or 1 (client i took part in round r), got "
                     f"values {np.unique(part)[:5].tolist()}.")
  valid = ~np.any(counts == INVALID_COUNT, axis=1)
  if np.any(counts[valid] < 0):
    raise ValueError("disaggregate_rounds: round_counts holds negative counts other than INVALID_COUNT rows.")
  empty = np.flatnonzero(np.asarray(part, bool).sum(axis=1) == 0)
  if empty.size:
    raise ValueError(f"disaggregate_rounds: rounds {empty[:5].tolist()} have no participant; every round of "
                     "participation needs the clients whose mean the counts were read from.")
  sums, expected = counts.sum(axis=1), np.asarray(part, bool).sum(axis=1) * n
  wrong = np.flatnonzero(valid & (sums != expected))
  if wrong.size:
    r = int(wrong[0])
    raise ValueError(f"disaggregate_rounds: round {r}'s counts sum to {int(sums[r]):,}, but an attack's counts of a "
                     f"round of {int(expected[r] // n)} client(s) with N = {n:,} windows each sum to "
                     f"{int(expected[r]):,} ({wrong.size} such round(s)). Pass num_samples = N per client update, "
                     "and participation rows naming the clients whose mean each round's counts were read from.")
  # float64 on the host, and shares snapped to _SNAP: profiles are rationals (1/K of a cohort's mean round, say),
  # and equal ones must tie exactly, so that the lower class wins on every machine, not the one float round-off favours.
  m = part[valid].astype(np.float64)
  profile = (np.linalg.pinv(m) @ counts[valid].astype(np.float64) if m.shape[0]
             else np.zeros((part.shape[1], counts.shape[1])))
  profile = np.maximum(np.round(profile, _SNAP), 0.0)
  total = profile.sum(axis=1, keepdims=True)
  share = np.round(profile / np.where(total > 0, total, 1.0) * n, _SNAP)
  floor = np.floor(share)
  remainder = np.rint(n - floor.sum(axis=1)).astype(np.int64)
  rank = np.argsort(np.argsort(-np.round(share - floor, _SNAP), axis=1, kind="stable"), axis=1, kind="stable")
  out = (floor + (rank < remainder[:, None])).astype(np.int32)
  seen = (part[valid].sum(axis=0) > 0) & (total[:, 0] > 0)
  return jnp.asarray(np.where(seen[:, None], out, INVALID_COUNT), jnp.int32)


def participation_rank(participation) -> tuple[int, int]:
  """(rank of the participation matrix over the clients that took part, number of those clients).

  Each client's profile is determined by the rounds only when the two are equal; below that, clients whose columns
  of M are linearly dependent (e.g. every round holding every client, or cohorts dealt once) share what the
  minimum-norm solution of `disaggregate_rounds` gives them, and its scores are no better than the even split.

  >>> participation_rank(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]]))
  (3, 3)
  >>> participation_rank(np.ones((5, 4)))                     # every round holds all four clients
  (1, 4)
  """
  part = np.asarray(participation, bool)
  if part.ndim != 2:
    raise ValueError(f"participation_rank: participation must be [R, n] of 0/1, got shape {part.shape}.")
  seen = part[:, part.any(axis=0)]
  return (int(np.linalg.matrix_rank(seen.astype(np.float64))) if seen.size else 0), int(seen.shape[1])


def rounds_participation(rounds) -> tuple[np.ndarray, list]:
  """(participation bool[R, n], the n client ids in its column order) from each round's members (a list of R lists
  of client ids, as the drivers' manifests and the studies' records hold them under `cohorts`).

  >>> m, ids = rounds_participation([[3, 1], [1, 2]])
  >>> ids, m.astype(int).tolist()
  ([1, 2, 3], [[1, 0, 1], [1, 1, 0]])
  """
  ids = sorted({c for members in rounds for c in members})
  column = {c: i for i, c in enumerate(ids)}
  part = np.zeros((len(rounds), len(ids)), bool)
  for r, members in enumerate(rounds):
    part[r, [column[c] for c in members]] = True
  return part, ids


def rounds_identifiable(rounds) -> bool:
  """Whether rounds given as their members (as `rounds_participation` reads them) determine every client's profile:
  the participation matrix has full rank over the clients that took part (`participation_rank`).

  >>> rounds_identifiable([[1, 2], [2, 3], [1, 3]]), rounds_identifiable([[1, 2], [1, 2], [3, 4]])
  (True, False)
  """
  rank, clients = participation_rank(rounds_participation(rounds)[0])
  return rank == clients
