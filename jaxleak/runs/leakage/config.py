"""The HAR leakage experiment's configuration: one frozen config for single-step (FedSGD) and multi-step (FedAvg)
runs, validated before any work, and the HAR paper's LDP grid."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax

from jaxleak import attacks as A
from jaxleak import data as D
from jaxleak import models
from jaxleak.federated import LocalSteps
from jaxleak.federated.apply import CLIENT_LOSSES
from jaxleak.federated.single_step import METHODS
from jaxleak.privacy import LdpConfig
from jaxleak.runs import fields

#: Accelerators: windows one vmapped call passes through the model (`LeakageConfig.vmap_chunk`). 64 updates of 100
#: windows: XLA:CPU's memory analysis of a WEAR-shaped DeepConvLSTM's full backward at 64 updates reads 7.3 GB of
#: temporaries (the norms pass; local training N:B:S = 100:20:5 3.2 GB), within a 16 GB card.
ACCELERATOR_WINDOWS_PER_VMAP = 6400

#: How secure aggregation (aggregate_clients = K > 1) deals the clients into rounds: 'once' into cohorts of K kept
#: for every round (`aggregation.deal_cohorts`), or 'every_round' anew for each round, as a server that selects each
#: round's clients does (`aggregation.redealt_rounds`), which lets it solve for each client over the rounds.
COHORT_DEALINGS = ("once", "every_round")


def check_every_window_trained(n: int, b: int, s: int) -> None:
  """Refuses a multi-step (N, B, S) whose S steps of B windows do not reach all N windows of the update (B S < N):
  the rest would never be trained on, yet count in the labels the attacks are scored against."""
  if b * s < n:
    raise ValueError(f"multi-step N={n}, B={b}, S={s}: the S steps of B windows use {b * s} windows, and the other "
                     f"{n - b * s} of the update's N would never be trained on, yet count in the labels the attacks "
                     "are scored against; choose B x S >= N (the paper's settings have B x S = N).")


@dataclasses.dataclass(frozen=True)
class LeakageConfig:
  """One leakage run: every client's updates of `num_samples` windows, attacked by every attack in `attacks`.

  `local=None` is the single-step setting (one gradient at the global model per update); a `LocalSteps` makes it
  multi-step (S local SGD steps of B of the N windows). `ldp` is the clients' local DP in the single-step
  setting; multi-step runs take theirs per local step (`LocalSteps.ldp`).
  """
  dataset: str = "hapt"
  data_dir: Optional[str] = None
  synthetic_scale: float = 1.0
  model: str = "deepconvlstm"
  head_bias: bool = True
  sampling: str = "shuffle"
  num_samples: int = 100                             # N, windows per update
  attacks: tuple[str, ...] = A.HAR_PAPER_ATTACKS
  clients: Optional[tuple[int, ...]] = None          # subject ids; None = all
  num_clients: Optional[int] = None                  # first k subjects (after `clients`)
  seed: int = 1
  grad_method: str = "fast"
  minmax: bool = True
  chunk_size: Optional[int] = None                   # updates vmapped together; None: see vmap_chunk
  batches_per_call: int = 64                         # updates per compiled call (progress granularity)
  ldp: LdpConfig = LdpConfig()
  local: Optional[LocalSteps] = None
  checkpoint_dir: Optional[str] = None               # trained LOSO models (train_models.py); None = untrained
  shard: bool = True                                 # spread each call's updates over all local devices
  compression: float = 0.0                           # defence: upload only the top (1 - CR) of each head leaf
  dropout: Optional[float] = None                    # the model's dropout rate (None: its default, 0.5)
  dirichlet_alpha: Optional[float] = None           # re-deal the windows to non-IID clients ~ Dir(alpha)
  dirichlet_clients: Optional[int] = None            # how many (default: as many as the selected subjects)
  rlu_aux_per_class: int = 32                        # RLU: the attacker's auxiliary windows per class
  rlu_simulations: int = 4                           # RLU: Monte Carlo draws of the simulated local training
  client_loss: str = "mean"                          # or "class_weighted": see CLIENT_LOSSES
  aggregate_clients: int = 1                         # K > 1: secure aggregation of K clients a round (aggregation.py)
  cohort_dealing: str = "once"                       # with K > 1: see COHORT_DEALINGS

  def vmap_chunk(self, full_backward: bool) -> int:
    """Updates vmapped together: `chunk_size` when set. Otherwise, on XLA:CPU, 8, except 1 for computations with a
    full backward pass (local training, whole-model clipping, the norms of an LDP sweep). Measured on 2 CPU cores
    (`benchmarks/chunk_sizes.py`, vmap of 1 vs 8 updates of 100 windows): multi step TinyHAR 1.44x, DeepConvLSTM
    1.11x faster; the norms pass DeepConvLSTM 1.09x (HAPT), TinyHAR 1.87x (WEAR-shaped); the forward-only single
    step is 1.12x slower with 1, so it keeps 8 (BUILD_NOTES.md, "Chunk sizes").

    On accelerators (not yet measured there): about `ACCELERATOR_WINDOWS_PER_VMAP` windows through the model at
    once, the largest power of two of updates within it, at least 8 and at most 256 (an update passes N windows
    in a single step, S B in S local steps): N = 100 or S B = 100 -> 64, S B = 500 -> 8. A GPU runs these small
    models' kernels far below its capacity, so a call's time is mostly launches, whatever it holds."""
    if self.chunk_size is not None:
      return self.chunk_size
    if jax.default_backend() == "cpu":
      return 1 if full_backward else 8
    windows = self.local.steps * self.local.batch_size if self.local is not None else self.num_samples
    fits = max(1, ACCELERATOR_WINDOWS_PER_VMAP // max(1, windows))
    return min(256, max(8, 1 << (fits.bit_length() - 1)))

  def validate(self) -> None:
    """Raises ValueError naming the field, the value and what is allowed. Cheap: no data is read."""
    if not self.attacks:
      raise ValueError("attacks: none given; choose from " + ", ".join(A.names()) + ".")
    if isinstance(self.attacks, str) or not all(isinstance(a, str) for a in self.attacks):
      raise ValueError(f"attacks must be a tuple of attack names, e.g. ('llg', 'ebi'), got {self.attacks!r}.")
    for name in self.attacks:
      A.info(name)                                   # raises with the valid names
    if len(set(self.attacks)) != len(self.attacks):
      raise ValueError(f"attacks: {list(self.attacks)} names an attack twice; list each once.")
    if self.sampling not in D.STRATEGIES:
      raise ValueError(f"sampling: unknown {self.sampling!r}; valid: {', '.join(D.STRATEGIES)}.")
    models.require(self.model, "leakage")
    if self.grad_method not in METHODS:
      raise ValueError(f"grad_method: unknown {self.grad_method!r}; valid: {', '.join(METHODS)}.")
    for name in ("num_samples", "chunk_size", "batches_per_call", "rlu_aux_per_class", "rlu_simulations",
                 "aggregate_clients"):
      if not (name == "chunk_size" and self.chunk_size is None):
        fields.integer(name, getattr(self, name))
    fields.seed("seed", self.seed)
    for name in ("head_bias", "minmax", "shard"):
      fields.boolean(name, getattr(self, name))
    if not (math.isfinite(self.synthetic_scale) and self.synthetic_scale > 0):
      raise ValueError(f"synthetic_scale must be a finite number > 0, got {self.synthetic_scale}.")
    fields.data_source(self.dataset, self.data_dir, self.synthetic_scale)
    if not isinstance(self.ldp, LdpConfig):
      raise ValueError(f"ldp must be a jaxleak.privacy.LdpConfig(clip_norm=..., noise_std=...), got {self.ldp!r}.")
    if self.local is not None and not isinstance(self.local, LocalSteps):
      raise ValueError(f"local must be None (single step) or a jaxleak.federated.LocalSteps, got {self.local!r}.")
    if self.clients is not None:
      if not self.clients:
        raise ValueError("clients: an empty list; leave it unset to attack every subject.")
      if len(set(self.clients)) != len(self.clients):
        raise ValueError(f"clients: {list(self.clients)} names a subject twice; list each once.")
    if self.num_clients is not None and self.num_clients <= 0:
      raise ValueError(f"num_clients must be positive, got {self.num_clients}.")
    if self.dropout is not None and not (math.isfinite(self.dropout) and 0.0 <= self.dropout < 1.0):
      raise ValueError(f"dropout must be in [0, 1) (None: the model's default), got {self.dropout}.")
    if not (math.isfinite(self.compression) and 0.0 <= self.compression < 1.0):
      raise ValueError(f"compression must be in [0, 1) (the fraction of each head leaf zeroed), got "
                       f"{self.compression}.")
    if not self.head_bias:
      biased = [a for a in self.attacks if A.info(a).signal == "bias"]
      if biased:
        raise ValueError(f"attacks {biased} read the head's bias gradient, which a bias-free head (head_bias=False) "
                         "does not have; drop them (the defence removes them; --attacks=weight names every attack "
                         "that reads the weight gradient only) or keep the bias.")
    if self.dirichlet_alpha is not None:
      if not (math.isfinite(self.dirichlet_alpha) and self.dirichlet_alpha > 0):
        raise ValueError(f"dirichlet_alpha must be a finite number > 0, got {self.dirichlet_alpha}.")
      if self.checkpoint_dir is not None:
        raise ValueError("dirichlet_alpha re-deals the windows to new clients, but trained models are per held-out "
                         "subject (LOSO); use the untrained state with a re-partition.")
    if self.dirichlet_clients is not None and (self.dirichlet_alpha is None or self.dirichlet_clients <= 0):
      raise ValueError(f"dirichlet_clients={self.dirichlet_clients}: needs dirichlet_alpha and a positive count.")
    if self.aggregate_clients > 1 and self.checkpoint_dir is not None:
      raise ValueError(f"aggregate_clients={self.aggregate_clients}: secure aggregation averages updates computed at "
                       "one global model, but trained models are one per held-out subject (LOSO); aggregate with "
                       "the untrained model, or use aggregate_clients=1.")
    if self.cohort_dealing not in COHORT_DEALINGS:
      raise ValueError(f"cohort_dealing: unknown {self.cohort_dealing!r}; valid: {', '.join(COHORT_DEALINGS)}.")
    if self.cohort_dealing != "once" and self.aggregate_clients < 2:
      raise ValueError(f"cohort_dealing={self.cohort_dealing!r} deals the clients of securely aggregated rounds, but "
                       f"aggregate_clients={self.aggregate_clients} aggregates nothing; set aggregate_clients >= 2.")
    if self.client_loss not in CLIENT_LOSSES:
      raise ValueError(f"client_loss: unknown {self.client_loss!r}; valid: {', '.join(CLIENT_LOSSES)}.")
    if self.client_loss != "mean" and self.ldp.per_example:
      raise ValueError(f"client_loss={self.client_loss!r} with per-example clipping is not supported (a clipped "
                       "example's share of a weighted loss is not defined here); clip per batch.")
    if self.local is not None:
      if not self.ldp.is_identity:
        raise ValueError("multi-step runs take their LDP per local step: set it in LocalSteps(ldp=...).")
      if self.local.batch_size > self.num_samples:
        raise ValueError(f"local batch size B={self.local.batch_size} is larger than the update's N="
                         f"{self.num_samples} windows; choose B <= N.")
      check_every_window_trained(self.num_samples, self.local.batch_size, self.local.steps)

  @property
  def multi_step(self) -> bool:
    return self.local is not None


#: The HAR paper's nine LDP settings (noise sigma, clip tau); tau = 0 means no clipping (spec 4).
PAPER_LDP_GRID = ((0.0, 0.1), (0.0, 0.5), (0.0, 1.0), (0.0, 1.5), (0.1, 0.0), (0.1, 0.1), (0.1, 0.5), (0.1, 1.0),
                  (0.1, 1.5))


def ldp_setting(noise: float, clip: float, *, scope: str = "all", granularity: str = "batch") -> LdpConfig:
  """LdpConfig from the reference's flag convention: clip 0 = no clipping, noise 0 = no noise.

  >>> ldp_setting(0.1, 0.0).clip_norm
  inf
  """
  for name, value in (("clip", clip), ("noise", noise)):
    fields.off_or_float32(name, value)
  return LdpConfig(clip_norm=clip if clip > 0 else math.inf, noise_std=noise, clip_scope=scope,
                   clip_granularity=granularity)


def paper_ldp_settings(scope: str = "all", granularity: str = "batch") -> dict[str, LdpConfig]:
  """'none' plus the nine settings, named ldp_<noise>_<clip> as the reference's job scripts."""
  out = {"none": LdpConfig()}
  for noise, clip in PAPER_LDP_GRID:
    out[f"ldp_{noise}_{clip}"] = ldp_setting(noise, clip, scope=scope, granularity=granularity)
  return out
