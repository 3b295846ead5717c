"""Batch samplers of the HAR paper (spec 3.1): index arrays i32[num_batches, N] into one client's windows.

Leftover policy (as the reference): only full batches are used; the final partial batch (n mod N windows for
sequential/shuffle, k*floor(n/k) mod N for balanced) is dropped. The samplers are deterministic functions of the
key; per-client keys come from `jax.random.fold_in(key, subject_id)`, so a client's batches do not depend on
which other clients are in the run.

The draws themselves use a NumPy Generator seeded from the key's bits (`_rng`): jax.random.permutation/choice
compile once per distinct size, i.e. once per client and class, which cost 10 s (shuffle) and 60 s (balanced)
on HAPT. Same key, same batches, as before.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak.data.dataset import WindowedClients
from jaxleak.types import check_prng_key, is_int

STRATEGIES = ("shuffle", "sequential", "balanced")


def _check_args(strategy: str, key, labels, num_samples, name: str = "num_samples") -> None:
  if strategy not in _SAMPLERS:
    raise ValueError(f"unknown sampling strategy {strategy!r}; valid: {', '.join(STRATEGIES)}.")
  if not is_int(num_samples):
    raise TypeError(f"{name} must be an integer (windows per batch), got {num_samples!r}.")
  if num_samples <= 0:
    raise ValueError(f"{name} must be positive, got {num_samples}.")
  check_prng_key(key, "sample_client")
  if np.ndim(labels) != 1:
    raise ValueError(f"labels must be the client's window labels, shape [n]; got shape {np.shape(labels)}.")
  values = np.asarray(labels)
  if values.size and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0):
    # The balanced sampler groups windows by label value: 0.5 or -3 would be sampled as classes of their own.
    lowest = f", values from {values.min()}" if np.issubdtype(values.dtype, np.number) else ""
    raise ValueError(f"labels must be class ids, integers >= 0; got dtype {values.dtype}{lowest}.")


def _rng(key) -> np.random.Generator:
  return _rng_of_bits(np.asarray(jax.random.key_data(key)))


def _rng_of_bits(bits: np.ndarray) -> np.random.Generator:
  return np.random.default_rng(bits.ravel().tolist())


_FOLDS_PER_CALL = 256


def _folded_key_bits(key, num: int) -> np.ndarray:
  """The key data of fold_in(key, i) for i in range(num), u32[num, ...], from compiled calls of 256 (one program for
  every client size) instead of num eager fold_ins (~0.5 ms each)."""
  starts = range(0, num, _FOLDS_PER_CALL)
  return np.concatenate([np.asarray(_fold_in_range(key, jnp.uint32(s))) for s in starts])[:num]


@jax.jit
def _fold_in_range(key, start):
  i = start + jnp.arange(_FOLDS_PER_CALL, dtype=jnp.uint32)
  return jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(key, i))(i))


def _to_batches(order: np.ndarray, num_samples: int) -> np.ndarray:
  nb = len(order) // num_samples
  return np.asarray(order[:nb * num_samples], np.int32).reshape(nb, num_samples)


def sequential(key, labels: np.ndarray, num_samples: int) -> np.ndarray:
  """Windows in temporal order, consecutive blocks of N."""
  del key
  return _to_batches(np.arange(len(labels)), num_samples)


def shuffle(key, labels: np.ndarray, num_samples: int) -> np.ndarray:
  """One random permutation (without replacement), consecutive blocks of N."""
  return _to_batches(_rng(key).permutation(len(labels)), num_samples)


def balanced(key, labels: np.ndarray, num_samples: int) -> np.ndarray:
  """The HAR code's BalancedSampler: a pool of q = floor(n/k) windows from each of the k present classes
  (with replacement iff the class has fewer than q windows), shuffled, then blocks of N. Absent classes are never
  sampled; windows may repeat within and across batches."""
  labels = np.asarray(labels)
  if labels.size == 0:
    return _to_batches(np.zeros(0, np.int32), num_samples)
  return _balanced_draw(_rng(key), _class_members(labels), len(labels), num_samples)


def _class_members(labels: np.ndarray) -> list[np.ndarray]:
  """The window indices of each present class, classes in first-appearance order (the balanced pool's order)."""
  return [np.flatnonzero(labels == c) for c in dict.fromkeys(labels.tolist())]


def _balanced_draw(rng: np.random.Generator, members: list[np.ndarray], n: int, num_samples: int) -> np.ndarray:
  q = n // len(members)
  pool = np.concatenate([rng.choice(m, q, replace=len(m) < q) for m in members])
  return _to_batches(pool[rng.permutation(len(pool))], num_samples)


_SAMPLERS = {"shuffle": shuffle, "sequential": sequential, "balanced": balanced}


def usable_windows(strategy: str, labels: np.ndarray) -> int:
  """The windows a sampler's batches are cut from: all n, or for 'balanced' its pool, k floor(n/k) for the k
  classes present (at most k - 1 fewer). A client whose usable windows are fewer than N yields no batch."""
  labels = np.asarray(labels)
  if strategy != "balanced" or labels.size == 0:
    return int(labels.size)
  k = len(np.unique(labels))
  return k * (labels.size // k)


def sample_client(strategy: str, key, labels: np.ndarray, num_samples: int) -> np.ndarray:
  """Batches of one client: i32[num_batches, num_samples] of indices into its windows (num_batches may be 0:
  fewer windows than num_samples give no batch)."""
  _check_args(strategy, key, labels, num_samples)
  return _SAMPLERS[strategy](key, labels, num_samples)


def check_client_sizes(clients: WindowedClients, num_samples: int,
                       fix: str = "lower --num_samples or leave those clients out with --clients",
                       subjects: Optional[Sequence[int]] = None, strategy: Optional[str] = None) -> None:
  """Raises ValueError naming every client (of `subjects`, default all) with fewer windows than num_samples, or
  with `strategy` 'balanced', fewer in its balanced pool (`usable_windows`)."""
  position = {s: k for k, s in enumerate(clients.subject_ids)}
  sizes = [(s, clients.client_size(position[s])) for s in (clients.subject_ids if subjects is None else subjects)]
  small = [(s, n) for s, n in sizes if n < num_samples]
  if small:
    raise ValueError(f"num_samples {num_samples} is larger than the data of clients (subject, windows) {small}; "
                     f"{fix}.")
  if strategy == "balanced":
    pools = [(s, n, usable_windows(strategy, clients.client_labels(position[s]))) for s, n in sizes]
    small = [row for row in pools if row[2] < num_samples]
    if small:
      raise ValueError(f"num_samples {num_samples} is larger than the balanced pool of clients (subject, windows, "
                       f"pool) {small}: balanced sampling draws floor(n/k) windows of each of a client's k classes, "
                       f"so no batch of N could be drawn (shuffle and sequential draw from all n); {fix}.")


def sample_clients(strategy: str, key, clients: WindowedClients, num_samples: int, *, queries: bool = False):
  """Batches of all clients.

  With queries=True, multi-step queries (`sample_queries`) instead of one pass of batches.

  Returns:
    (indices i32[K, N] into clients.windows, client index i32[K]); batches ordered by client.
  Raises:
    ValueError naming every client with fewer windows than num_samples.
  """
  check_client_sizes(clients, num_samples, strategy=strategy)
  idx, owner = [], []
  for k in range(clients.num_clients):
    sampler = sample_queries if queries else sample_client
    b = sampler(strategy, jax.random.fold_in(key, clients.subject_ids[k]), clients.client_labels(k), num_samples)
    idx.append(b + clients.offsets[k]); owner.append(np.full(len(b), k, np.int32))
  return np.concatenate(idx).astype(np.int32), np.concatenate(owner)


def sample_queries(strategy: str, key, labels: np.ndarray, num_points: int) -> np.ndarray:
  """Multi-step queries of one client (spec 3.3): i32[floor(n / N), N] indices.

  'sequential': disjoint consecutive chunks. 'shuffle' and 'balanced': every query is a fresh draw of N windows
  (distinct within a query for shuffle; from a fresh balanced pool for balanced), so windows may recur across
  queries, as in the reference.
  """
  _check_args(strategy, key, labels, num_points, "num_points")
  n = len(labels)
  num_queries = n // num_points
  if strategy == "sequential":
    return _to_batches(np.arange(n), num_points)
  if usable_windows(strategy, labels) < num_points:          # no query (balanced: a pool of fewer than N)
    return np.zeros((0, num_points), np.int32)
  # Query q's draw uses fold_in(key, q), as `shuffle`/`balanced` would with that key (their first batch).
  rngs = [_rng_of_bits(bits) for bits in _folded_key_bits(key, num_queries)]
  if strategy == "shuffle":
    return np.stack([_to_batches(rng.permutation(n), num_points)[0] for rng in rngs]).astype(np.int32)
  members = _class_members(np.asarray(labels))
  return np.stack([_balanced_draw(rng, members, n, num_points)[0] for rng in rngs]).astype(np.int32)
