"""Each client's labels from aggregated rounds: `attacks.disaggregate_rounds` against hand-computed cases and the
algebra of least squares, and the re-dealt rounds it reads (`aggregation.redealt_rounds`)."""
import numpy as np
import pytest

import jaxleak.attacks as A
from jaxleak.runs.leakage.aggregation import deal_cohorts, redealt_rounds


def _profiles(rng, n, c, num_samples):
  """i64[n, C]: random counts summing to num_samples per client."""
  return np.stack([np.bincount(rng.integers(0, c, num_samples), minlength=c) for _ in range(n)])


@pytest.mark.parametrize("seed", range(6))
def test_rounds_of_changing_cohorts_give_back_every_clients_counts(seed):
  rng = np.random.default_rng(seed)
  n, c, k, num_samples = int(rng.integers(4, 9)), int(rng.integers(2, 7)), int(rng.integers(2, 4)), 20
  profiles = _profiles(rng, n, c, num_samples)
  batch_client = np.repeat(np.arange(n), 12)                         # 12 updates each, all of one profile
  rows, part = redealt_rounds(batch_client, n, k, seed)
  rounds = part.astype(np.int64) @ profiles                          # what a perfect attack reads of each round
  assert np.linalg.matrix_rank(part.astype(float)) == n              # the cohorts changed enough to tell all apart
  np.testing.assert_array_equal(A.disaggregate_rounds(rounds, part, num_samples), profiles)


def test_cohorts_dealt_once_tell_nothing_beyond_the_even_split():
  # Two cohorts of two (clients 0, 2 and 1, 3), two rounds each, N = 4: the minimum-norm solution gives each member
  # half its cohort's mean round, [6, 2, 0] and [2, 6, 0] -> [4, 4, 0] / 2 = [2, 2, 0], whatever each member held.
  part = np.array([[1, 0, 1, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 1, 0, 1]])
  rounds = np.array([[6, 2, 0], [2, 6, 0], [0, 1, 7], [0, 3, 5]])
  got = np.asarray(A.disaggregate_rounds(rounds, part, 4))
  np.testing.assert_array_equal(got[[0, 2]], [[2, 2, 0], [2, 2, 0]])
  np.testing.assert_array_equal(got[[1, 3]], [[0, 1, 3], [0, 1, 3]])       # [0, 2, 6] / 2 = [0, 1, 3]


def test_fixed_cohorts_give_each_member_its_cohorts_mean_round_split_evenly():
  rng = np.random.default_rng(7)
  n, k, c, num_samples = 9, 3, 5, 30
  cohorts = deal_cohorts(n, k, __import__("jax").random.key(0))
  part = np.zeros((4 * len(cohorts), n), int)
  for r in range(4):
    for j, members in enumerate(cohorts):
      part[r * len(cohorts) + j, members] = 1
  exact = part @ _profiles(rng, n, c, num_samples)
  rounds = np.stack([rng.multinomial(row.sum(), row / row.sum()) for row in exact])   # noisy reads, sums kept
  got = np.asarray(A.disaggregate_rounds(rounds, part, num_samples))
  for members in cohorts:
    mean = rounds[part[:, members[0]] == 1].mean(0) / k
    assert (got[members] == got[members[0]]).all()                   # the members cannot be told apart
    assert np.abs(got[members[0]] - mean / mean.sum() * num_samples).max() < 1   # largest-remainder rounding


def test_equal_shares_tie_to_the_lower_class_as_exact_fractions_do():
  # One round of two clients, N = 7: each holds [5, 9] / 2 = [2.5, 4.5]; the halves tie and class 0 takes the window.
  np.testing.assert_array_equal(A.disaggregate_rounds(np.array([[5, 9]]), np.ones((1, 2), int), 7), [[3, 4]] * 2)
  # Cohorts of K clients in every round: the profile is a rational (the mean round / K), rounded here in exact
  # fractions; float32 round-off broke 7 of 300 such ties (1/3, 1/5 ... are not binary fractions).
  from fractions import Fraction
  for seed in range(60):
    rng = np.random.default_rng(seed)
    k, num_rounds, c, n = (int(rng.integers(2, 7)), int(rng.integers(1, 5)), int(rng.integers(2, 6)),
                           int(rng.integers(2, 12)))
    rounds = np.stack([rng.multinomial(k * n, np.ones(c) / c) for _ in range(num_rounds)])
    mean = [Fraction(int(x), num_rounds * k) for x in rounds.sum(0)]
    share = [x / sum(mean) * n for x in mean]
    want = [int(x) for x in share]                                   # floor (shares are >= 0)
    for i in sorted(range(c), key=lambda i: (want[i] - share[i], i))[:n - sum(want)]:
      want[i] += 1
    got = np.asarray(A.disaggregate_rounds(rounds, np.ones((num_rounds, k), int), n))
    np.testing.assert_array_equal(got, [want] * k, err_msg=f"seed {seed}: rounds {rounds.tolist()}, N = {n}")


def test_rounds_without_counts_are_left_out_and_clients_never_seen_are_invalid():
  part = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 0, 1]])
  profiles = np.array([[4, 0], [1, 3], [0, 4]])
  rounds = part @ profiles
  rounds[3] = A.INVALID_COUNT                                         # the attack returned no counts there
  np.testing.assert_array_equal(A.disaggregate_rounds(rounds, part, 4), profiles)
  rounds[[0, 2]] = A.INVALID_COUNT                                    # client 0 is in no valid round
  got = np.asarray(A.disaggregate_rounds(rounds, part, 4))
  assert (got[0] == A.INVALID_COUNT).all() and (got[1:] >= 0).all() and (got[1:].sum(1) == 4).all()


@pytest.mark.parametrize("counts,part,message", [
    (np.zeros((3, 2), int), np.zeros((4, 3), int), "the same R"),
    (np.zeros(3, int), np.zeros((3, 3), int), r"must be \[R, C\]"),
    (np.zeros((3, 2)), np.zeros((3, 3), int), "integer counts"),
    (np.zeros((3, 2), int), np.full((3, 3), 2), "must hold 0 or 1"),
    (np.full((3, 2), -3), np.zeros((3, 3), int), "negative counts"),
    (np.ones((2, 2), int), np.array([[1, 0, 1], [0, 0, 0]]), r"rounds \[1\] have no participant"),
    (np.array([[1, 3], [3, 4]]), np.eye(2, dtype=int), r"round 1's counts sum to 7, but .* 1 client\(s\) with N = 4"),
    (np.array([[4, 4], [2, 2]]), np.array([[1, 1], [1, 1]]), r"round 1's counts sum to 4, but .* sum to 8"),
])
def test_what_is_not_rounds_and_participation_is_refused(counts, part, message):
  with pytest.raises(ValueError, match=message):
    A.disaggregate_rounds(counts, part, 4)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_redealt_rounds_take_each_update_once_in_order_k_distinct_clients_a_round(k):
  counts = np.array([5, 1, 7, 3, 4, 6])
  batch_client = np.repeat(np.arange(len(counts)), counts)
  rows, part = redealt_rounds(batch_client, len(counts), k, seed=3)
  assert len(rows) == k * len(part) and len(set(rows.tolist())) == len(rows)          # every update at most once
  members = batch_client[rows].reshape(-1, k)
  for a, row in enumerate(members):
    assert len(set(row.tolist())) == k and part[a].sum() == k and part[a, row].all()
  for client in range(len(counts)):                                  # a client's updates in its own order
    mine = rows[batch_client[rows] == client]
    np.testing.assert_array_equal(mine, np.arange(len(mine)) + counts[:client].sum())
  left = counts - np.bincount(batch_client[rows], minlength=len(counts))
  assert np.count_nonzero(left) < k                                  # stopped only when no round could gather K
  again = redealt_rounds(batch_client, len(counts), k, seed=3)
  np.testing.assert_array_equal(again[0], rows)                      # seeded
  if k > 1:
    assert not np.array_equal(redealt_rounds(batch_client, len(counts), k, seed=4)[0], rows)
  with pytest.raises(ValueError, match="only 6 clients"):
    redealt_rounds(batch_client, len(counts), 7, seed=0)
