"""The Eavesdrop experiments' configuration: one federation and its attacker, Whole Determination trials, and
the paper's grids."""
from __future__ import annotations

import dataclasses
import math

from jaxleak import data as D
from jaxleak import models
from jaxleak.attacks.eavesdrop import LINKAGE_METHODS
from jaxleak.federated.rounds import LocalEpochs
from jaxleak.privacy import LdpConfig
from jaxleak.runs import fields

# The paper's MNIST settings (sec. IV-A3, IV-B): 100 participants, 10 % selected, L_bs 64, L_lr 0.01, L_ep 3.
PAPER_LOCAL = LocalEpochs(epochs=3, batch_size=64, lr=0.01)
#: Sweeps of Figures 6-9 (the figures' exact grids are not given in the text; these span the ranges it names).
PAPER_SWEEPS = {
    "batch_size": (8, 16, 20, 32, 64, 128),
    "epochs": (1, 2, 3, 5, 8, 10),
    "fraction": (0.1, 0.2, 0.3, 0.4, 0.5),
    "num_participants": (100, 200, 500, 1000),
}
#: How participants' data are drawn: the paper's main labels, or Dirichlet(alpha) label proportions.
PARTITIONS = ("main_labels", "dirichlet")
#: The alpha sweep of the non-IID preset (small: one or two labels each; large: close to IID).
DIRICHLET_ALPHAS = (0.1, 0.3, 1.0, 10.0)
#: Table VI's compression rates.
PAPER_COMPRESSION = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


#: The fields each partition does not read (a value other than the default there is refused).
_UNREAD_BY_PARTITION = {"main_labels": ("dirichlet_alpha", "samples_per_participant", "min_owned"),
                        "dirichlet": ("main_labels", "other_samples")}

#: The fields Whole Determination does not read: its trials draw their own allocations (label groups), play at most
#: wd.max_rounds rounds, and read the per-label ratios, not Class Sniffing or Quantity Inference (nor the attacker
#: as a participant). Plus the study field `replicates` (its trials are its replicates).
NOT_READ_BY_WHOLE_DETERMINATION = ("rounds", "partition", "main_labels", "other_samples", "dirichlet_alpha",
                                   "samples_per_participant", "min_owned", "sniff_margin", "ratio_threshold",
                                   "abort_std", "attacker_participates")
#: Why, in the words of the refusals.
WHOLE_DETERMINATION_READS = ("its trials draw their own label groups, play at most wd_max_rounds rounds and read the "
                             "per-label ratios; wd_trials are its replicates")


def _normal(value):
  return tuple(value) if isinstance(value, list) else value


def _field_defaults() -> dict:
  return {f.name: f.default for f in dataclasses.fields(EavesdropConfig)}


@dataclasses.dataclass(frozen=True)
class EavesdropConfig:
  """One federation and attacker. Defaults: the paper's MNIST setting, on the 5,000 real MNIST digits of the
  optional extra `mnist` (dataset='digits': scikit-learn's 8x8 digits, the stand-in that needs only `digits`)."""
  dataset: str = "mnist"
  model: str = "mlp"
  data_dir: str | None = None
  synthetic_scale: float = 1.0
  num_participants: int = 100
  fraction: float = 0.1
  rounds: int = 100
  local: LocalEpochs = PAPER_LOCAL
  partition: str = "main_labels"                  # main_labels (sec. IV-B) or dirichlet (non-IID, alpha)
  main_labels: tuple[int, int] = (3, 5)
  dirichlet_alpha: float = 0.5                    # partition=dirichlet: label proportions ~ Dir(alpha)
  samples_per_participant: int = 256              # partition=dirichlet: examples per participant
  min_owned: int = 16                             # partition=dirichlet: examples of a label that make it owned
  samples_per_label: int = 64
  other_samples: int = 8
  aux_fraction: float = 0.4
  aux_samples_per_label: int | None = None        # default: samples_per_label (the paper: "close to" it)
  compression: float = 0.0                        # top-CR upload compression (Table VI)
  ldp_noise: float = 0.0                          # participants' LDP: Gaussian noise std on every update entry
  ldp_clip: float = 0.0                           # participants' LDP: clip the whole update's L2 norm (0 = off)
  dropout: float | None = None                    # None: the model's default; 0 removes dropout
  sniff_margin: float = 0.5
  ratio_threshold: float = 0.5                    # Th_R
  abort_std: float = 0.25                         # abort when std(x_i) > abort_std * K
  attacker_participates: bool = False             # participant 0 is the attacker (selected like any other)
  seed: int = 0

  def __post_init__(self):
    if self.dataset not in D.POOL_DATASETS:
      raise ValueError(f"dataset: unknown {self.dataset!r}; valid: {', '.join(D.POOL_DATASETS)}.")
    models.require(self.model, "eavesdrop")
    fields.data_source(self.dataset, self.data_dir, self.synthetic_scale)
    for name in ("rounds", "num_participants", "samples_per_participant", "min_owned"):
      fields.integer(name, getattr(self, name))
    fields.seed("seed", self.seed)
    fields.boolean("attacker_participates", self.attacker_participates)
    if not isinstance(self.local, LocalEpochs):
      raise ValueError(f"local must be a jaxleak.federated.LocalEpochs(epochs, batch_size, lr), got {self.local!r}.")
    if not 0.0 < self.fraction <= 1.0:
      raise ValueError(f"fraction P must be in (0, 1], got {self.fraction}.")
    if self.attacker_participates and self.num_participants < 2:
      raise ValueError(f"attacker_participates with num_participants={self.num_participants}: the attacker would be "
                       "the whole federation, with nobody else's labels to infer; use num_participants >= 2.")
    if not 0.0 <= self.compression < 1.0:
      raise ValueError(f"compression must be in [0, 1), got {self.compression}.")
    for name in ("ldp_noise", "ldp_clip"):
      fields.off_or_float32(name, getattr(self, name))
    if self.partition not in PARTITIONS:
      raise ValueError(f"partition: unknown {self.partition!r}; valid: {', '.join(PARTITIONS)}.")
    unread = [n for n in _UNREAD_BY_PARTITION[self.partition]
              if _normal(getattr(self, n)) != _normal(_field_defaults()[n])]
    if unread:
      raise ValueError(f"{', '.join(f'{n}={getattr(self, n)!r}' for n in unread)}: not read with partition="
                       f"{self.partition!r} (the other partition's setting); leave it at its default, or set "
                       f"partition={PARTITIONS[1 - PARTITIONS.index(self.partition)]!r}.")
    if self.partition == "dirichlet" and not (self.dirichlet_alpha > 0 and self.samples_per_participant > 0
                                               and self.min_owned > 0):
      raise ValueError(f"dirichlet partition needs dirichlet_alpha, samples_per_participant and min_owned > 0, got "
                       f"{self.dirichlet_alpha}, {self.samples_per_participant}, {self.min_owned}.")
    if self.partition == "dirichlet" and self.min_owned > self.samples_per_participant:
      raise ValueError(f"min_owned={self.min_owned} is more than a participant's samples_per_participant="
                       f"{self.samples_per_participant}: no participant could own a label; lower min_owned.")
    if len(self.main_labels) != 2 or not 1 <= self.main_labels[0] <= self.main_labels[1]:
      raise ValueError(f"main_labels must be two integers 1 <= lo <= hi (labels a participant mainly holds), got "
                       f"{self.main_labels}.")
    if self.samples_per_label <= 0 or self.other_samples < 0:
      raise ValueError(f"samples_per_label must be positive and other_samples >= 0, got {self.samples_per_label}, "
                       f"{self.other_samples}.")
    if not 0.0 < self.aux_fraction < 1.0:
      raise ValueError(f"aux_fraction must be in (0, 1), got {self.aux_fraction}.")
    if self.aux_samples_per_label is not None and self.aux_samples_per_label < 0:
      raise ValueError(f"aux_samples_per_label must be >= 0 (0 or None: samples_per_label), got "
                       f"{self.aux_samples_per_label}.")
    if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1) (None: the model's default), got {self.dropout}.")
    for name, ok, allowed in (("sniff_margin", self.sniff_margin >= 0, ">= 0"),
                              ("ratio_threshold", self.ratio_threshold > 0, "> 0"),
                              ("abort_std", self.abort_std > 0, "> 0")):
      if not (ok and math.isfinite(getattr(self, name))):
        raise ValueError(f"{name} must be a finite number {allowed}, got {getattr(self, name)}.")
    if self.dataset in ("digits", "mnist") and self.model in ("deepconvlstm", "tinyhar"):
      raise ValueError(f"model {self.model!r} reads HAR windows [T, channels]; for the image dataset "
                       f"{self.dataset!r} use mlp or cnn.")

  @property
  def ldp(self) -> LdpConfig:
    """The participants' LDP on their uploads (clip the whole update, then noise); identity when both are 0."""
    return LdpConfig(clip_norm=self.ldp_clip if self.ldp_clip > 0 else math.inf, noise_std=self.ldp_noise)

  @property
  def num_selected(self) -> int:
    return max(1, int(round(self.fraction * self.num_participants)))

  @property
  def labels_per_client(self) -> float:
    """N_L as the attacker knows it for the main-label partition: the mean of the main-label range (a Dirichlet
    federation's N_L is the mean number of owned labels, `Federation.labels_per_client`)."""
    return (self.main_labels[0] + self.main_labels[1]) / 2


def config_record(cfg: EavesdropConfig) -> dict:
  """The config as the JSON that checkpoints are tied to and manifests hold: `dataclasses.asdict`, without the
  local loss when it is the papers' mean (so records written before `LocalEpochs.loss` existed still match)."""
  d = dataclasses.asdict(cfg)
  if d["local"]["loss"] == "mean":
    del d["local"]["loss"]
  return d


#: Sec. IV-D1: labels split at random into groups allocated Q, Q/4 and Q/5 examples.
PAPER_WD_FACTORS = (1.0, 1 / 4, 1 / 5)


@dataclasses.dataclass(frozen=True)
class WholeDeterminationConfig:
  """Trials of Whole Determination (the paper: 20 trainings per dataset, attacked at two stages)."""
  trials: int = 20
  total_per_label: int = 2000                   # Q, examples of a group-1 label in the whole federation
  factors: tuple[float, ...] = PAPER_WD_FACTORS
  stages: tuple[float, ...] = (0.5, 0.85)       # test-accuracy thresholds: middle, late
  max_rounds: int = 400
  window: int = 5                               # rounds of ratios per label vector, from the stage's round on
  num_clusters: int | None = None               # None: chosen by the largest merge-height jump
  method: str = "ward"                          # scipy linkage method (Euclidean distance)

  def __post_init__(self):
    for name in ("trials", "total_per_label", "max_rounds", "window"):
      fields.integer(name, getattr(self, name))
    factors, stages = _floats(self.factors, "factors"), _floats(self.stages, "stages")
    if len(factors) < 2 or not all(0 < f <= 1 for f in factors):
      raise ValueError(f"factors must be at least two group sizes in (0, 1] relative to Q (the paper: 1, 1/4, 1/5), "
                       f"got {self.factors}.")
    if not stages or not all(0 < s <= 1 for s in stages) or any(b <= a for a, b in zip(stages, stages[1:])):
      raise ValueError(f"stages must be increasing test accuracies in (0, 1] (the paper: 0.5, 0.85), got "
                       f"{self.stages}.")
    if self.num_clusters is not None:
      fields.integer("num_clusters", self.num_clusters)            # None: chosen from the merge heights
    if self.method not in LINKAGE_METHODS:
      raise ValueError(f"method: unknown linkage {self.method!r}; valid: {', '.join(LINKAGE_METHODS)}.")
    object.__setattr__(self, "factors", factors)
    object.__setattr__(self, "stages", stages)

  def check_classes(self, num_classes: int) -> None:
    """Raises the ValueError a dataset of `num_classes` labels meets: more groups or clusters than labels."""
    if len(self.factors) > num_classes or (self.num_clusters or 0) > num_classes:
      raise ValueError(f"Whole Determination splits {num_classes} labels: factors ({len(self.factors)} groups) and "
                       f"num_clusters ({self.num_clusters}) must not exceed that.")


def _floats(values, name: str) -> tuple[float, ...]:
  try:
    out = tuple(float(v) for v in values)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a sequence of numbers, got {values!r}.") from None
  if not all(math.isfinite(v) for v in out):
    raise ValueError(f"{name} must be finite numbers, got {values!r}.")
  return out


WD_STAGE_NAMES = {0.5: "middle", 0.85: "late"}


