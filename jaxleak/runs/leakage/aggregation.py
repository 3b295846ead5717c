"""HAR clients under secure aggregation (beyond the HAR paper, which names it as future work): each round the
server sees only the mean of the updates of K clients, never one client's update.

The clients are dealt once into cohorts of K (a seeded permutation; the n mod K clients left over take no part).
Round r of a cohort is the mean of its members' r-th updates, for as many rounds as its member with the fewest
updates has (secure aggregation needs every member in every round). With N windows per client update, an
aggregate is the update of K N windows: for a single step at one global model, the mean of the K mean-loss head
gradients is the mean-loss head gradient over all K N windows (each client still min-max scales its own N), so
every attack reads it with num_samples = K N and is scored against the sum of the members' counts. A cohort
takes a client's place in the metrics: LnAcc and LeAcc per aggregate, ClassAcc per cohort, mean and std over
cohorts. What that tells the server of one client is scored too: each member guessed to hold 1/K of its round's
predicted counts (`split_among_members`), against its own update, per client.

The members' updates are the very updates a run without aggregation computes (same keys, same values); only
the updates that reach an aggregate are computed.

`redealt_rounds` deals the clients anew for every round instead (the runs' `cohort_dealing='every_round'`), which
lets a server solve for each client over the rounds (`attacks.disaggregate_rounds`); each aggregate is then its own
unit of the metrics, and each client's solved label distribution is scored against its own (`client_profiles`).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak import attacks as A


def check_clients_per_round(num_clients: int, clients_per_round: int) -> None:
  """Refuses K = clients_per_round above the run's clients: no round could gather K."""
  if clients_per_round > num_clients:
    raise ValueError(f"aggregate_clients={clients_per_round}: the run has only {num_clients} "
                     f"client{'s' if num_clients != 1 else ''}, so no round "
                     f"can gather {clients_per_round}; choose aggregate_clients <= {num_clients} (or attack more "
                     "clients).")


def deal_cohorts(num_clients: int, clients_per_round: int, key: jax.Array) -> np.ndarray:
  """i64[num_clients // K, K]: client indices dealt into cohorts of K by a permutation drawn with `key`; the last
  num_clients mod K clients of the permutation are in no cohort."""
  check_clients_per_round(num_clients, clients_per_round)
  order = np.asarray(jax.random.permutation(key, num_clients))
  cohorts = num_clients // clients_per_round
  return order[:cohorts * clients_per_round].reshape(cohorts, clients_per_round).astype(np.int64)


def cohort_updates(batch_client: np.ndarray, num_clients: int, cohorts: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Which updates form the aggregates: (update indices i64[A * K], cohort i32[A], round i32[A]).

  batch_client: i32[U], the client of each update, sorted (a client's updates consecutive, in order).
  Aggregate a is the mean of updates [a K, (a + 1) K) of the result: round r of cohort c holds each member's
  r-th update, in the cohort's member order, for r below the fewest updates any member has."""
  counts = np.bincount(batch_client, minlength=num_clients)
  first = np.concatenate([[0], np.cumsum(counts)[:-1]])
  picks, cohort_of, round_of = [], [], []
  for c, members in enumerate(cohorts):            # a few cohorts: host-side planning, no data touched
    rounds = int(counts[members].min())
    picks.append((first[members][None, :] + np.arange(rounds)[:, None]).ravel())
    cohort_of.append(np.full(rounds, c, np.int32))
    round_of.append(np.arange(rounds, dtype=np.int32))
  return (np.concatenate(picks).astype(np.int64), np.concatenate(cohort_of), np.concatenate(round_of))


def redealt_rounds(batch_client: np.ndarray, num_clients: int, clients_per_round: int, seed
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Cohorts dealt anew every round, as a server that selects the clients of each round would: (update indices
  i64[A K], participation bool[A, num_clients]).

  At each step the clients with updates left are dealt at random (a NumPy generator seeded with `seed`, an int or
  a sequence of ints) into groups of K; each group is one aggregated round and each member gives its next update;
  the clients left over (fewer than K) wait for the next step. Steps go on while K clients have updates left.
  Aggregate a is the mean of updates [a K, (a + 1) K) of the result. batch_client: i32[U], sorted (a client's
  updates consecutive, in order). Beside `deal_cohorts` (cohorts dealt once), this is what lets
  `attacks.disaggregate_rounds` tell the members of a round apart."""
  check_clients_per_round(num_clients, clients_per_round)
  counts = np.bincount(batch_client, minlength=num_clients)
  first = np.concatenate([[0], np.cumsum(counts)[:-1]])
  used = np.zeros(num_clients, np.int64)
  rng = np.random.default_rng(seed)
  picks, rounds = [], []
  while True:
    ready = np.flatnonzero(used < counts)
    if len(ready) < clients_per_round:
      break
    order = rng.permutation(ready)
    members = order[:len(order) // clients_per_round * clients_per_round].reshape(-1, clients_per_round)
    picks.append((first[members] + used[members]).ravel())   # this step's rounds: distinct clients, so one
    used[members] += 1                                       # increment each is every member's next update
    row = np.zeros((len(members), num_clients), bool)
    row[np.arange(len(members))[:, None], members] = True
    rounds.append(row)
  if not picks:
    return np.zeros(0, np.int64), np.zeros((0, num_clients), bool)
  return np.concatenate(picks).astype(np.int64), np.concatenate(rounds)


def mean_over_members(tree, clients_per_round: int):
  """Leaves [A K, ...] -> [A, ...] float32: the mean over each aggregate's K consecutive member updates, summed
  member by member in order, then divided by K (traceable). Written out so that the value is the same bitwise
  wherever it runs: eagerly in `scoring.attack_and_score`, or inside a study's compiled LDP sweep."""
  def mean(a):
    a = jnp.asarray(a, jnp.float32).reshape(-1, clients_per_round, *jnp.shape(a)[1:])
    total = a[:, 0]
    for j in range(1, clients_per_round):
      total = total + a[:, j]
    return total / jnp.float32(clients_per_round)
  return jax.tree.map(mean, tree)


def aggregated_view(prep):
  """The Prepared of the aggregates, from a Prepared whose updates are ordered by `cohort_updates` (`prep.cohorts`
  set): indices i64[A, K N] (the members' windows), batch_client = cohort, batch_index = round, and the cohorts as
  the units the metrics are per (`scored_ids`)."""
  k = len(prep.cohorts[0])
  a = len(prep.indices) // k
  return dataclasses.replace(
      prep, indices=prep.indices.reshape(a, k * prep.indices.shape[1]), batch_client=prep.cohort_of,
      batch_index=prep.round_of, dropout_keys=prep.dropout_keys[::k], class_weights=None,
      unit_ids=tuple(range(len(prep.cohorts))))


def per_aggregate(tree, clients_per_round: int):
  """Leaves [A K, ...] -> [A, ...]: each aggregate's first member's row, for what is the same for all members of a
  round at one global model (the RLU basis)."""
  return jax.tree.map(lambda x: x[::clients_per_round], tree)


def aggregate(prep, grads, rlu_basis: Optional[object] = None):
  """(`aggregated_view(prep)`, the aggregates' mean updates (NumPy), the RLU basis per aggregate)."""
  k = len(prep.cohorts[0])
  return aggregated_view(prep), jax.tree.map(np.asarray, _mean(grads, k)), per_aggregate(rlu_basis, k)


_mean = jax.jit(mean_over_members, static_argnums=1)


def split_among_members(pred, clients_per_round: int, num_samples: int) -> np.ndarray:
  """i32[A K, C]: each of aggregate a's K members guessed to hold 1/K of its predicted counts pred[a] (i32[A, C]),
  re-rounded to N by largest remainder (`scale_counts`); an invalid row (an attack that returned no counts) stays
  invalid. Row a K + j is member j of aggregate a, as `cohort_updates` orders them."""
  return np.repeat(scale_counts(pred, num_samples), clients_per_round, axis=0)


def scale_counts(counts, num_samples: int) -> np.ndarray:
  """i32[R, C]: each row of counts (integers [R, C]) scaled to sum to N, rounded by largest remainder with ties to
  the lower class, in exact integer arithmetic (host-side, int64: a remainder of 1/3 is the same for every class
  on every machine, which float32 shares are not). A row summing to 0, or holding `INVALID_COUNT`, is returned as
  it is.

  >>> scale_counts(np.array([[1, 1, 1], [3, 0, 1]]), 4).tolist()
  [[2, 1, 1], [3, 0, 1]]
  """
  counts = np.asarray(counts, np.int64)
  total = counts.sum(axis=1, keepdims=True)
  keep = (total[:, 0] <= 0) | np.any(counts == A.INVALID_COUNT, axis=1)
  scaled = counts * num_samples
  floor, rest = np.divmod(scaled, np.where(total > 0, total, 1))
  rank = np.argsort(np.argsort(-rest, axis=1, kind="stable"), axis=1, kind="stable")
  out = floor + (rank < num_samples - floor.sum(axis=1, keepdims=True))
  return np.where(keep[:, None], counts, out).astype(np.int32)


def client_profiles(true_counts, batch_client: np.ndarray, num_clients: int, num_samples: int) -> np.ndarray:
  """i32[num_clients, C]: each client's label distribution over its updates (true_counts i32[U, C], the client of
  each update batch_client i32[U]): their counts summed and scaled to sum to N by largest remainder (as
  `split_among_members` rounds); a client without updates gets a row of zeros."""
  counts = np.asarray(true_counts, np.int64)
  total = np.zeros((num_clients, counts.shape[1]), np.int64)
  np.add.at(total, np.asarray(batch_client), counts)
  return scale_counts(total, num_samples)
