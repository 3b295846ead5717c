"""Studies: a paper's whole experiment grid as a small, readable config.

A study is a name and a tuple of parts; each part is a grid (the product of its axes) of one kind of task:

* `HarGrid`: HAR label-leakage tasks (`runs.leakage`): datasets x models x states x samplings x seeds, each either
  single-step with every (sigma, tau) of `ldp`, or multi-step with every (N, B, S) of `multi_step`;
* `EavesdropGrid`: Eavesdrop federations (`runs.eavesdrop`): a base config and axes over its fields, each task
  played for its rounds and attacked every round (Class Sniffing, Quantity Inference);
* `WholeDeterminationGrid`: the same federations' Whole Determination trials (Table V, Figs. 4-5), with the
  `wd_*` fields of `runs.eavesdrop.WholeDeterminationConfig` besides the Eavesdrop ones.

Presets (`PRESETS`) give the HAR paper's sampling, LDP and multi-step grids (spec 8.4) and the Eavesdrop paper's
tables and figure sweeps; `override` changes any field of every part that has it, e.g. a sub-grid:

  >>> study = override(preset("har_sampling"), {"datasets": "synthetic_tiny", "models": "tinyhar"})
  >>> [len(p.datasets) * len(p.models) * len(p.states) * len(p.samplings) for p in study.parts]
  [6]
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import Any, Optional, Union

from jaxleak import attacks as A
from jaxleak import data as D
from jaxleak import models, storage
from jaxleak.federated import EQUIVALENTS
from jaxleak.runs import fields
from jaxleak.runs.eavesdrop.config import (DIRICHLET_ALPHAS, NOT_READ_BY_WHOLE_DETERMINATION, PAPER_COMPRESSION,
                                           PAPER_SWEEPS, WHOLE_DETERMINATION_READS)
from jaxleak.runs.leakage.config import (CLIENT_LOSSES, COHORT_DEALINGS, PAPER_LDP_GRID,
                                         check_every_window_trained)
from jaxleak.types import FLOAT32_MAX

#: The HAR paper's multi-step settings (N, B, S) (spec 3.4).
PAPER_MULTI_STEP = ((100, 20, 5), (100, 50, 2), (500, 100, 5))
STATES = ("untrained", "trained")
#: Clients per securely aggregated round in `har_aggregation` (1: each update alone; WEAR has 18 subjects, Wetlab 22).
AGGREGATE_CLIENTS = (1, 2, 5, 10)


def _check_read_by(field: str, given, datasets, readers) -> None:
  """Refuses a data field that none of the grid's datasets reads (it would be ignored, yet change every key)."""
  if given and not set(datasets) & set(readers):
    raise ValueError(f"{field} is read only by {', '.join(readers)}; none of datasets {list(datasets)} reads it: "
                     f"drop it.")


def check_choices(what: str, values, valid) -> None:
  """ValueError naming `what` unless `values` is a non-empty list of distinct names from `valid`."""
  if not values:
    raise ValueError(f"{what} is empty; choose from {', '.join(valid)}.")
  unknown = [v for v in values if v not in valid]
  if unknown:
    raise ValueError(f"{what}: unknown {unknown}; choose from {', '.join(valid)}.")
  repeated = sorted({v for v in values if list(values).count(v) > 1})
  if repeated:
    raise ValueError(f"{what}: {repeated} listed more than once; list each once.")


@dataclasses.dataclass(frozen=True)
class HarGrid:
  """HAR leakage tasks: the product of datasets, models, states, samplings and seeds; each point is single-step
  with every (sigma, tau) in `ldp` ((0, 0) = no LDP), or, when `multi_step` is non-empty, multi-step with every
  (N, B, S) in it (no LDP, as the paper). Trained states read `checkpoint_dir` (a template with {dataset}
  and {model}) written by experiments/train_models.py."""
  datasets: tuple[str, ...] = ("synthetic_wear", "synthetic_wetlab")
  models: tuple[str, ...] = ("deepconvlstm", "tinyhar")
  states: tuple[str, ...] = STATES
  samplings: tuple[str, ...] = D.STRATEGIES
  seeds: tuple[int, ...] = (1,)
  num_samples: int = 100
  ldp: tuple[tuple[float, float], ...] = ((0.0, 0.0),)
  clip_scope: str = "all"
  multi_step: tuple[tuple[int, int, int], ...] = ()
  local_lr: float = 1e-4
  equivalent: str = "mean"
  attacks: tuple[str, ...] = A.HAR_PAPER_ATTACKS
  synthetic_scale: float = 1.0
  data_dir: Optional[str] = None                     # template: {dataset}
  checkpoint_dir: str = "checkpoints/{dataset}_{model}"
  num_clients: Optional[int] = None
  dirichlet_alphas: tuple[float, ...] = ()           # () = one client per subject; else non-IID re-partitions
  head_bias: bool = True                             # defence: False = a bias-free head (the HAR paper's advice)
  compression: float = 0.0                           # defence: top-CR upload compression of the head gradient
  dropout: Optional[float] = None                    # the models' dropout rate (None: their default, 0.5)
  client_loss: str = "mean"                          # or "class_weighted" (LeakageConfig.client_loss)
  aggregate_clients: tuple[int, ...] = ()            # () = each client's update alone; else K per aggregated round
  cohort_dealing: str = "once"                       # or "every_round" (LeakageConfig.cohort_dealing), for K > 1

  def validate(self) -> None:
    for field, values, valid in (("datasets", self.datasets, D.DATASETS), ("models", self.models, models.names()),
                                 ("states", self.states, STATES), ("samplings", self.samplings, D.STRATEGIES),
                                 ("attacks", self.attacks, A.names())):
      check_choices(field, values, valid)
    for m in self.models:
      models.require(m, "leakage")
    if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
      raise ValueError(f"seeds: {list(self.seeds)}; give distinct integers >= 0.")
    for s in self.seeds:
      fields.seed("seeds", s)
    if self.num_samples <= 0:
      raise ValueError(f"num_samples must be positive, got {self.num_samples}.")
    if not self.ldp:
      raise ValueError("ldp: empty; give (sigma, tau) pairs, (0, 0) for no LDP.")
    for sigma, tau in self.ldp:
      if not (0 <= sigma <= FLOAT32_MAX and 0 <= tau <= FLOAT32_MAX):
        raise ValueError(f"ldp: ({sigma}, {tau}) is not a pair of numbers in [0, {FLOAT32_MAX:.4g}] (sigma, tau; "
                         "0 = off; computed in float32, which holds no more).")
    if len(set(self.ldp)) != len(self.ldp):
      raise ValueError("ldp: a (sigma, tau) pair is listed twice.")
    if self.clip_scope not in ("all", "last_layer"):
      raise ValueError(f"clip_scope: unknown {self.clip_scope!r}; valid: all, last_layer.")
    if self.client_loss not in CLIENT_LOSSES:
      raise ValueError(f"client_loss: unknown {self.client_loss!r}; valid: {', '.join(CLIENT_LOSSES)}.")
    if self.cohort_dealing not in COHORT_DEALINGS:
      raise ValueError(f"cohort_dealing: unknown {self.cohort_dealing!r}; valid: {', '.join(COHORT_DEALINGS)}.")
    if self.equivalent not in EQUIVALENTS:
      raise ValueError(f"equivalent: unknown {self.equivalent!r}; valid: {', '.join(EQUIVALENTS)}.")
    self._check_unread()
    if self.multi_step and self.ldp != ((0.0, 0.0),):
      raise ValueError("multi_step and ldp in one grid: the paper runs multi-step without LDP; make them two parts.")
    if len(set(self.multi_step)) != len(self.multi_step):
      raise ValueError("multi_step: an (N, B, S) triple is listed twice.")
    for n, b, s in self.multi_step:
      if min(n, b, s) <= 0 or b > n:
        raise ValueError(f"multi_step: (N={n}, B={b}, S={s}) needs positive values and B <= N.")
      check_every_window_trained(n, b, s)
    if not 0 < self.local_lr <= FLOAT32_MAX:
      raise ValueError(f"local_lr must be a number in (0, {FLOAT32_MAX:.4g}] (float32), got {self.local_lr}.")
    if not (math.isfinite(self.synthetic_scale) and self.synthetic_scale > 0):
      raise ValueError(f"synthetic_scale must be a finite number > 0, got {self.synthetic_scale}.")
    _check_read_by("data_dir", self.data_dir, self.datasets, D.FILE_DATASETS)
    _check_read_by("synthetic_scale", self.synthetic_scale != 1.0, self.datasets, D.SYNTHETIC_DATASETS)
    if not (math.isfinite(self.compression) and 0.0 <= self.compression < 1.0):
      raise ValueError(f"compression must be in [0, 1), got {self.compression}.")
    if self.num_clients is not None and (isinstance(self.num_clients, bool) or not isinstance(self.num_clients, int)
                                         or self.num_clients <= 0):
      raise ValueError(f"num_clients must be a positive integer (or None: every client), got {self.num_clients!r}.")
    if self.dropout is not None and (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))):
      raise ValueError(f"dropout must be a number in [0, 1) (or None: the models' default), got {self.dropout!r}.")
    if self.data_dir is not None and not isinstance(self.data_dir, str):
      raise ValueError(f"data_dir must be a folder path (a template with {{dataset}}), got {self.data_dir!r}.")
    if self.dropout is not None and not (math.isfinite(self.dropout) and 0.0 <= self.dropout < 1.0):
      raise ValueError(f"dropout must be in [0, 1) (none: the models' default), got {self.dropout}.")
    if not self.head_bias:
      biased = [a for a in self.attacks if A.info(a).signal == "bias"]
      if biased:
        raise ValueError(f"head_bias=false with attacks {biased}, which read the bias gradient a bias-free head "
                         "does not have; drop them from --set attacks=... (attacks=weight: every attack that reads "
                         "the weight gradient only).")
    if any(not (math.isfinite(a) and a > 0) for a in self.dirichlet_alphas):
      raise ValueError(f"dirichlet_alphas: {list(self.dirichlet_alphas)}; give finite numbers > 0.")
    if len(set(self.dirichlet_alphas)) != len(self.dirichlet_alphas):
      raise ValueError(f"dirichlet_alphas: {list(self.dirichlet_alphas)}; give distinct numbers (an alpha listed "
                       "twice would be the same tasks).")
    if "trained" in self.states:
      for field, names in (("dataset", self.datasets), ("model", self.models)):
        if len(set(names)) > 1 and "{" + field + "}" not in self.checkpoint_dir:
          raise ValueError(f"checkpoint_dir {self.checkpoint_dir!r} has no {{{field}}}, so the {len(names)} "
                           f"{field}s of states=trained would read one checkpoint; put {{{field}}} in it "
                           "(default: checkpoints/{dataset}_{model}).")
    if self.dirichlet_alphas and "trained" in self.states:
      raise ValueError("dirichlet_alphas with states=trained: trained models are per held-out subject (LOSO); "
                       "re-partitioned clients need --set states=untrained.")
    if any(isinstance(k, bool) or not isinstance(k, int) or k <= 0 for k in self.aggregate_clients) or len(
        set(self.aggregate_clients)) != len(self.aggregate_clients):
      raise ValueError(f"aggregate_clients: {list(self.aggregate_clients)}; give distinct positive integers (clients "
                       "per aggregated round; 1 = each update alone).")
    if any(k > 1 for k in self.aggregate_clients) and "trained" in self.states:
      raise ValueError("aggregate_clients with states=trained: secure aggregation averages updates computed at one "
                       "global model, but trained models are one per held-out subject (LOSO); use --set "
                       "states=untrained.")

  def reads(self, field: str) -> bool:
    """Whether any task of this grid reads `field` (see `HAR_FIELD_READERS`)."""
    if field in ("ldp", "num_samples"):
      return not self.multi_step
    if field in ("local_lr", "equivalent"):
      return bool(self.multi_step)
    if field == "clip_scope":
      return not self.multi_step and any(tau > 0 for _, tau in self.ldp)
    if field == "checkpoint_dir":
      return "trained" in self.states
    if field == "cohort_dealing":
      return any(k > 1 for k in self.aggregate_clients)
    return True

  def _check_unread(self) -> None:
    """Refuses a non-default value no task of this grid reads (it would be ignored, and look applied)."""
    for name, reader in HAR_FIELD_READERS.items():
      if getattr(self, name) != HarGrid.__dataclass_fields__[name].default and not self.reads(name):
        raise ValueError(f"{name}={getattr(self, name)} is read only by {reader}, and this grid has none: drop "
                         f"{name}, or add what reads it.")


#: The HarGrid fields read by some tasks only, and by which (every other field is read by every task).
HAR_FIELD_READERS = {
    "ldp": "single-step tasks (multi-step tasks run without LDP)",
    "num_samples": "single-step tasks (multi-step tasks take N from multi_step)",
    "local_lr": "multi-step tasks (multi_step=N:B:S,...)",
    "equivalent": "multi-step tasks (multi_step=N:B:S,...)",
    "clip_scope": "single-step tasks with an ldp pair that clips (tau > 0)",
    "checkpoint_dir": "tasks of states=trained",
    "cohort_dealing": "securely aggregated tasks (aggregate_clients with a K > 1)",
}


@dataclasses.dataclass(frozen=True)
class EavesdropGrid:
  """Eavesdrop federations: `base` (EavesdropConfig fields; the rest default) and `axes` {field: values} whose
  product gives the tasks. Fields `local_epochs`, `local_batch_size`, `local_lr` set the local training."""
  base: tuple[tuple[str, Any], ...] = ()
  axes: tuple[tuple[str, tuple], ...] = ()
  replicates: int = 1


@dataclasses.dataclass(frozen=True)
class WholeDeterminationGrid(EavesdropGrid):
  """Whole Determination trials over Eavesdrop federations: `base` and `axes` over the Eavesdrop fields and the
  `wd_*` fields (wd_trials, wd_total_per_label, wd_factors, wd_stages, wd_max_rounds, wd_window,
  wd_num_clusters, wd_method). Each task runs all its trials (checkpointed per trial)."""


Part = Union[HarGrid, EavesdropGrid]


@dataclasses.dataclass(frozen=True)
class Study:
  name: str
  parts: tuple[Part, ...]
  summary: str = ""


def _ev(axes: dict, grid: type = EavesdropGrid, **base) -> EavesdropGrid:
  return grid(base=tuple(sorted(base.items())), axes=tuple((k, tuple(v)) for k, v in axes.items()))


_SAMPLING = HarGrid()
_LDP = HarGrid(ldp=tuple(PAPER_LDP_GRID))
_MULTI = HarGrid(multi_step=PAPER_MULTI_STEP)
#: The defences side by side (beyond the papers' grids): none, a bias-free head, LDP, upload compression; RLU beside
#: the paper's five attacks. Without a bias only the weight attacks can run.
HAR_DEFENCE_ATTACKS = A.HAR_PAPER_ATTACKS + ("rlu",)
_DEFENCES = (HarGrid(attacks=HAR_DEFENCE_ATTACKS),
             HarGrid(attacks=tuple(a for a in HAR_DEFENCE_ATTACKS if A.info(a).signal != "bias"), head_bias=False),
             HarGrid(attacks=HAR_DEFENCE_ATTACKS, ldp=((0.1, 1.0),)),
             HarGrid(attacks=HAR_DEFENCE_ATTACKS, compression=0.9),
             HarGrid(attacks=HAR_DEFENCE_ATTACKS, dropout=0.8))

PRESETS: dict[str, Study] = {s.name: s for s in (
    Study("har_sampling", (_SAMPLING,), "HAR paper: datasets x models x states x samplings, single step (24)"),
    Study("har_ldp", (_LDP,), "HAR paper: the 24 sampling settings x 9 (sigma, tau) LDP settings (216)"),
    Study("har_multistep", (_MULTI,), "HAR paper: the 24 sampling settings x (N, B, S) in (100,20,5), (100,50,2), "
          "(500,100,5) (72)"),
    Study("har_paper", (_SAMPLING, _LDP, _MULTI), "HAR paper: sampling + LDP + multi-step grids (312)"),
    Study("har_dirichlet", (HarGrid(states=("untrained",), dirichlet_alphas=DIRICHLET_ALPHAS),),
          "HAR beyond the paper: subjects' windows re-dealt to non-IID Dirichlet(alpha) clients, alpha in 0.1, "
          "0.3, 1, 10, untrained (48)"),
    Study("har_defences", _DEFENCES, "HAR beyond the paper: each defence alone (none = the paper's models with "
          "dropout 0.5, bias-free head, LDP sigma=0.1 tau=1, top-10 % compression, dropout 0.8) against LLG, LLG*, "
          "EBI, LLBG, iLRG and RLU (120)"),
    Study("har_aggregation", (HarGrid(states=("untrained",), aggregate_clients=AGGREGATE_CLIENTS),),
          "HAR beyond the paper: clients under secure aggregation, the server seeing only the mean update of K "
          "clients a round, K in 1 (alone), 2, 5, 10; untrained (48)"),
    Study("har_client_loss", (_SAMPLING, HarGrid(client_loss="class_weighted")),
          "HAR beyond the paper: the 24 sampling settings with the mean loss and with clients that weight their "
          "loss by their own label counts (48)"),
    Study("eavesdrop_defences", (_ev({"dropout": (0.0, 0.5)}), _ev({"compression": (0.5, 0.9)}, dropout=0.0),
                                 _ev({"ldp_noise": (0.001, 0.01)}, dropout=0.0, ldp_clip=0.1)),
          "Eavesdrop beyond the paper: no defence (dropout 0), dropout 0.5, top-CR compression 0.5 and 0.9, LDP "
          "(clip 0.1, noise 0.001 and 0.01; a digits MLP update's norm is ~0.2, a head weight's ~0.003)"),
    Study("eavesdrop_client_loss", (_ev({"client_loss": CLIENT_LOSSES}),
                                    _ev({"client_loss": CLIENT_LOSSES}, partition="dirichlet")),
          "Eavesdrop beyond the paper: participants with the mean loss and with a loss weighted by their own label "
          "counts, main-label and Dirichlet(0.5) participants (4)"),
    Study("eavesdrop_tables", (_ev({"model": ("mlp", "cnn")}),), "Eavesdrop Tables III-IV: MLP and CNN"),
    Study("eavesdrop_compression", (_ev({"compression": PAPER_COMPRESSION}, model="cnn"),),
          "Eavesdrop Table VI: top-CR compression"),
    Study("eavesdrop_dropout", (_ev({"dropout": (0.0, 0.5)}),), "Eavesdrop: the dropout defence"),
    Study("eavesdrop_dirichlet", (_ev({"dirichlet_alpha": DIRICHLET_ALPHAS}, partition="dirichlet"),),
          "Eavesdrop beyond the paper: non-IID Dirichlet(alpha) participants, alpha in 0.1, 0.3, 1, 10"),
    Study("eavesdrop_sweeps", (_ev({"local_batch_size": PAPER_SWEEPS["batch_size"]}),
                               _ev({"local_epochs": PAPER_SWEEPS["epochs"]}),
                               _ev({"fraction": PAPER_SWEEPS["fraction"]}),
                               _ev({"num_participants": PAPER_SWEEPS["num_participants"]})),
          "Eavesdrop Figs. 6-9: Quantity Inference vs L_bs, L_ep, P, N_p"),
)}
PRESETS["eavesdrop_whole_determination"] = Study(
    "eavesdrop_whole_determination", (_ev({"model": ("mlp",)}, WholeDeterminationGrid),),
    "Eavesdrop Table V and Figs. 4-5: Whole Determination (label groups Q, Q/4, Q/5), 20 trials, two stages")
PRESETS["eavesdrop_paper"] = Study("eavesdrop_paper", PRESETS["eavesdrop_tables"].parts
                                   + PRESETS["eavesdrop_compression"].parts + PRESETS["eavesdrop_sweeps"].parts
                                   + PRESETS["eavesdrop_whole_determination"].parts,
                                   "Eavesdrop Tables III-VI and Figs. 4-9")


def preset(name: str) -> Study:
  try:
    return PRESETS[name]
  except KeyError:
    raise ValueError(f"unknown study {name!r}; presets: {', '.join(sorted(PRESETS))}.") from None


def _parse(value: Any, like: Any, field: str):
  """A value for `field` from a string (command line) or Python value, typed like the field's default."""
  if not isinstance(value, str):
    return tuple(value) if isinstance(like, tuple) else value
  text = value.strip()
  if isinstance(like, tuple):
    items = _list_items(text)
    if field == "dirichlet_alphas":
      return tuple(_numbers(items, field))
    if field == "aggregate_clients":
      return tuple(_numbers(items, field, integers=True))
    if field in ("ldp", "multi_step"):                   # pairs/triples: 0:0.1,0.1:0.5  or  100:20:5,500:100:5
      cast, width, form = (float, 2, "sigma:tau numbers") if field == "ldp" else (int, 3, "N:B:S integers")
      parts = [item.split(":") for item in items]
      bad = [item for item, p in zip(items, parts) if len(p) != width]
      if bad:
        raise ValueError(f"{field}: {bad[0]!r} is not {form}; give comma-separated items like "
                         f"{'0.01:0.5,0.1:1' if width == 2 else '100:20:5,500:100:5'}.")
      return tuple(tuple(_cast(cast, x.strip(), f"{field} item {item!r}", listed=True) for x in p)
                   for item, p in zip(items, parts))
    elem = like[0] if like else ""
    cast = type(elem) if isinstance(elem, (int, float)) and not isinstance(elem, bool) else str
    if cast in (float, int):                             # numbers and ranges (geom:1e-3:1:10, lin:0.1:0.9:9)
      return tuple(_numbers(items, field, integers=cast is int))
    return tuple(_cast(cast, x, field, listed=True) for x in items)
  if field in _PATH_FIELDS and text.startswith("~"):     # the shell leaves '~' after '=' alone
    text = os.path.expanduser(text)
  if like is None:                                       # an optional field: none, a number, or a string
    if text.lower() == "none":
      return None
    for cast in (int, float):
      try:
        return cast(text)
      except ValueError:
        pass
    return text
  if isinstance(like, str):
    if "," in text and field not in _PATH_FIELDS:       # a name never holds a comma: a list meant as an axis
      raise ValueError(f"{field}: {text!r} is not one value ({field} takes one value here: give one, or run the "
                       "study once per value).")
    return text
  if isinstance(like, bool):
    if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
      raise ValueError(f"{field}: {text!r} is not true or false.")
    return text.lower() in ("1", "true", "yes")
  return _cast(type(like), text, field, listed=False)


#: String fields that hold a path (a comma is allowed in them).
_PATH_FIELDS = ("data_dir", "checkpoint_dir")


def _list_items(text: str) -> list[str]:
  """The comma-separated items of `text`, stripped; "" is no item. An empty item ("a,,b", "a,", ",") is refused: it is
  a slip, and reading it as nothing could silently change the grid (`multi_step=,` would mean single-step)."""
  if not text:
    return []
  items = [x.strip() for x in text.split(",")]
  if not all(items):
    raise ValueError(f"{text!r} has an empty item; give comma-separated values without empty ones "
                     "(an empty value, nothing after '=', is the empty list).")
  return items


def _cast(kind: type, text: str, field: str, *, listed: bool):
  """int(text) or float(text), refused in words: the field, what it takes, and (for one value given as a list) that
  this study does not vary it."""
  try:
    return kind(text)
  except ValueError:
    what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
    hint = "" if listed or not _several(text) else " (one value: this study does not vary it)"
    raise ValueError(f"{field}: {text!r} is not {what}{hint}.") from None


#: The optional HarGrid fields (default None) and a value of their type, to parse `--set` text as that type.
_HAR_OPTIONAL_LIKE = {"num_clients": 0, "dropout": 0.0, "data_dir": ""}


def _parse_field(field: str, value: Any, like: Any):
  try:
    parsed = _parse(value, like, field)
    return A.expand_groups(parsed, field) if field == "attacks" else parsed
  except ValueError as e:
    raise ValueError(f"--set {field}={value}: {e}") from None


#: `--set` names that give a HAR study's `ldp` as the product of two lists (`ldp_product`).
LDP_PRODUCT_FIELDS = ("ldp_sigmas", "ldp_taus")
#: The most values a `geom:` or `lin:` range item may make (a typo such as 1e6 values is refused, not run).
MAX_RANGE_VALUES = 10_000
#: The most (sigma, tau) settings `ldp_product` makes (each is a task with its own record in every group).
MAX_LDP_SETTINGS = 100_000


def ldp_product(sigmas: str, taus: str) -> tuple[tuple[float, float], ...]:
  """Every (sigma, tau) of two lists, sigma major: `ldp` for a large LDP sweep without typing its pairs.

  Each list is comma-separated items, each a number or a range `geom:START:STOP:NUM` (NUM values spaced evenly on
  a log scale, both ends included; START, STOP > 0) or `lin:START:STOP:NUM` (evenly on a linear scale); range values
  are rounded to 6 significant digits, so that they print, and key the records, as typed. Values are noise stds
  (sigma) and clipping norms (tau) in [0, float32 max]; 0 means none.

  >>> ldp_product("0,0.1", "0,lin:0.5:1.5:3")
  ((0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.0, 1.5), (0.1, 0.0), (0.1, 0.5), (0.1, 1.0), (0.1, 1.5))
  >>> len(ldp_product("0,geom:1e-3:1:39", "0,lin:0.1:2.4:24"))
  1000
  """
  lists = [_number_list(text, field) for text, field in zip((sigmas, taus), LDP_PRODUCT_FIELDS)]
  if len(lists[0]) * len(lists[1]) > MAX_LDP_SETTINGS:
    raise ValueError(f"{len(lists[0]):,} sigmas x {len(lists[1]):,} taus = {len(lists[0]) * len(lists[1]):,} LDP "
                     f"settings, more than {MAX_LDP_SETTINGS:,} (a record each, per group): give fewer values.")
  return tuple((s, t) for s in lists[0] for t in lists[1])


def _numbers(items: list[str], field: str, integers: bool = False) -> list:
  """The numbers of a list's items, a range item (`geom:START:STOP:NUM`, `lin:START:STOP:NUM`; see `ldp_product`)
  expanded to its values rounded to 6 significant digits; with `integers`, integers, a range's values rounded to
  the nearest (a range that then repeats a value is refused, naming it)."""
  import numpy as np
  out = []
  for item in items:
    kind, _, rest = item.partition(":")
    if kind in ("geom", "lin"):
      parts = rest.split(":")
      form = f"{kind}:START:STOP:NUM (e.g. {'geom:1e-3:1:10' if kind == 'geom' else 'lin:0.1:1.5:15'})"
      if len(parts) != 3:
        raise ValueError(f"{field}: {item!r} is not {form}.")
      start, stop = (_cast(float, x, f"{field} item {item!r}", listed=True) for x in parts[:2])
      num = _cast(int, parts[2], f"{field} item {item!r}", listed=True)
      if not 2 <= num <= MAX_RANGE_VALUES:
        raise ValueError(f"{field}: {item!r}: NUM must be in [2, {MAX_RANGE_VALUES:,}] (the values it makes).")
      if kind == "geom" and not (start > 0 and stop > 0):
        raise ValueError(f"{field}: {item!r}: a geom range needs START and STOP > 0 (list 0 as an item of its own: "
                         f"0,{item}).")
      values = np.geomspace(start, stop, num) if kind == "geom" else np.linspace(start, stop, num)
      if not integers:
        out += [float(f"{v:.6g}") for v in values]
        continue
      whole = [int(v) for v in np.rint(values)]
      repeated = sorted(v for v, n in collections.Counter(whole).items() if n > 1)
      if repeated:
        raise ValueError(f"{field}: {item!r} makes {repeated[:5]} more than once when rounded to integers (this "
                         "field takes integers): give a smaller NUM or a wider range.")
      out += whole
    else:
      out.append(_cast(int if integers else float, item, field, listed=True))
  return out


def _number_list(text: str, field: str) -> list[float]:
  """`_numbers` of a comma-separated list, each in [0, float32 max] and listed once."""
  out = _numbers(_list_items(text.strip()), field)
  if not out:
    raise ValueError(f"{field}: empty; give comma-separated numbers or ranges (geom:START:STOP:NUM, "
                     "lin:START:STOP:NUM).")
  bad = [v for v in out if not 0 <= v <= FLOAT32_MAX]
  if bad:
    raise ValueError(f"{field}: {bad[0]} is not a number in [0, {FLOAT32_MAX:.4g}] (0 means none).")
  repeated = sorted(v for v, n in collections.Counter(out).items() if n > 1)
  if repeated:
    raise ValueError(f"{field}: {repeated[:5]} listed more than once (ranges included, after rounding to 6 "
                     "significant digits); list each once.")
  return out


def override(study: Study, values: dict[str, Any]) -> Study:
  """The study with `values` replacing fields of every part that has them (others are left alone). A field no
  part has is refused, naming the fields there are. HAR fields read by some tasks only (`HAR_FIELD_READERS`) go to the
  parts that read them, and are refused where none does; `multi_step` goes to the multi-step parts, or to every
  HAR part where the study has none. `ldp_sigmas` and `ldp_taus` together give `ldp` as their product
  (`ldp_product`)."""
  given = [k for k in LDP_PRODUCT_FIELDS if k in values]
  if not given or not any(isinstance(p, HarGrid) for p in study.parts):
    return _override(study, values)
  shown = " ".join(f"--set {k}={values[k]}" for k in given)
  if len(given) == 1:
    raise ValueError(f"{shown}: give ldp_sigmas and ldp_taus together (the LDP settings are every (sigma, tau) of "
                     "the two lists), or ldp=sigma:tau,... as pairs.")
  if "ldp" in values:
    raise ValueError(f"--set ldp={values['ldp']} and {shown}: choose one (pairs, or the product of two lists).")
  try:
    pairs = ldp_product(str(values["ldp_sigmas"]), str(values["ldp_taus"]))
  except ValueError as e:
    raise ValueError(f"{shown}: {e}") from None
  rest = {k: v for k, v in values.items() if k not in given}
  try:
    return _override(study, {**rest, "ldp": pairs})
  except ValueError as e:                         # said of the lists the user typed, not of their 1,000 pairs
    raise ValueError(str(e).replace(f"--set ldp={pairs}", shown)) from None


def _override(study: Study, values: dict[str, Any]) -> Study:
  known, wd_unread = set(), set()
  parts = []
  # So that `--set ldp=...` on har_paper changes its LDP grid without making its multi-step part an impossible one.
  # In stages: multi_step, then the fields that decide who reads the rest (ldp, states, aggregate_clients), then
  # the rest.
  har_multi = any(p.multi_step for p in study.parts if isinstance(p, HarGrid))
  stages = (("multi_step",), ("ldp", "states", "aggregate_clients"), None)
  # `--set compression=0.5,0.9` on eavesdrop_paper: the list goes to its part that varies compression; the parts
  # that hold one value keep it (a single value goes to every part).
  eavesdrop_axes = {k for p in study.parts if not isinstance(p, HarGrid) for k, _ in p.axes}
  for part in study.parts:
    if isinstance(part, HarGrid):
      fields = {f.name for f in dataclasses.fields(HarGrid)}
      known |= fields
      staged = {k for stage in stages if stage for k in stage}
      for stage in stages:
        names = [k for k in values if k in fields and (k in stage if stage else k not in staged)]
        changes = {}
        for k in names:
          if k == "multi_step" and not (part.multi_step or not har_multi):
            continue
          if k != "multi_step" and not part.reads(k):
            continue
          like = getattr(part, k)
          if like is None and k in _HAR_OPTIONAL_LIKE:          # typed as the field, not guessed from the text
            if isinstance(values[k], str) and values[k].strip().lower() == "none":
              changes[k] = None
              continue
            like = _HAR_OPTIONAL_LIKE[k]
          changes[k] = _parse_field(k, values[k], like)
        if "attacks" in changes and "head_bias" not in values and not part.head_bias:
          changes["attacks"] = _bias_free_attacks(study.name, values["attacks"], changes["attacks"])
        part = dataclasses.replace(part, **changes)
      parts.append(part)
    else:
      base = dict(part.base)
      axes = dict(part.axes)
      for k, v in values.items():
        if isinstance(part, WholeDeterminationGrid) and k in _NOT_READ_BY_WD and k not in axes:
          wd_unread.add(k)                                     # eavesdrop_paper: goes to its other parts only
          continue
        try:
          if k == "replicates":
            replicates = int(v)
            if replicates < 1:
              raise ValueError("must be a positive integer (federations per setting).")
            part = dataclasses.replace(part, replicates=replicates)
          elif k in axes:
            axes[k] = _parse(v, axes[k], k)
          elif k in eavesdrop_axes and _several(v):
            continue                                           # a list: for the parts that vary it
          elif k in _EAVESDROP_FIELDS:
            base[k] = _parse(v, _EAVESDROP_FIELDS[k], k) if isinstance(v, str) else v
          elif k in WD_FIELDS and isinstance(part, WholeDeterminationGrid):
            base[k] = _parse(v, WD_FIELDS[k], k) if isinstance(v, str) else v
          else:
            continue
        except ValueError as e:
          raise ValueError(f"--set {k}={v}: {e}") from None
        known.add(k)
      parts.append(dataclasses.replace(part, base=tuple(sorted(base.items())), axes=tuple(axes.items())))
  for k in sorted(wd_unread - known):
    raise ValueError(f"--set {k}={values[k]}: not read by Whole Determination ({WHOLE_DETERMINATION_READS}), and "
                     f"{study.name} has no other part: drop it.")
  har = [p for p in parts if isinstance(p, HarGrid)]
  for k in sorted(set(values) & set(HAR_FIELD_READERS)):
    if har and not any(p.reads(k) for p in har):
      raise ValueError(f"--set {k}={values[k]}: read only by {HAR_FIELD_READERS[k]}, and {study.name} has none "
                       "with these settings: drop it, or set what reads it as well.")
  unknown = sorted(set(values) - known)
  if unknown:
    allowed = sorted(known | ({f.name for f in dataclasses.fields(HarGrid)} | set(LDP_PRODUCT_FIELDS) if any(
        isinstance(p, HarGrid) for p in study.parts) else set(_EAVESDROP_FIELDS) | {"replicates"})
                     | (set(WD_FIELDS) if any(isinstance(p, WholeDeterminationGrid) for p in study.parts) else set()))
    raise ValueError(f"unknown study field(s) {unknown} for {study.name}; fields: {', '.join(allowed)}.")
  return dataclasses.replace(study, parts=tuple(parts))


def _bias_free_attacks(study_name: str, given: Any, attacks: tuple[str, ...]) -> tuple[str, ...]:
  """`--set attacks=...` on a preset's bias-free-head part (har_defences): the attacks given that read no bias
  gradient, as the preset itself chooses there; refused if that leaves none."""
  kept = tuple(a for a in attacks if A.info(a).signal != "bias")
  if not kept:
    raise ValueError(f"--set attacks={given}: {study_name}'s bias-free-head part (head_bias=false) can run none of "
                     f"{list(attacks)}, which read the bias gradient it does not have; add one that reads the weight "
                     f"gradient (e.g. llg, llg_star, rlu; attacks=weight: all of them): that part runs those alone.")
  return kept


def _several(value: Any) -> bool:
  """Whether a `--set` value lists several values (commas, or a geom:/lin: range), or is one."""
  return isinstance(value, str) and ("," in value or value.strip().startswith(("geom:", "lin:")))


def _eavesdrop_fields() -> dict[str, Any]:
  from jaxleak.runs.eavesdrop.config import EavesdropConfig
  cfg = EavesdropConfig()
  out = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(EavesdropConfig) if f.name != "local"}
  out.update(local_epochs=cfg.local.epochs, local_batch_size=cfg.local.batch_size, local_lr=cfg.local.lr,
             client_loss=cfg.local.loss, dropout=0.5, data_dir="", aux_samples_per_label=0)
  return out


_EAVESDROP_FIELDS = _eavesdrop_fields()


def _wd_fields() -> dict[str, Any]:
  from jaxleak.runs.eavesdrop.config import WholeDeterminationConfig
  wd = WholeDeterminationConfig()
  return {"wd_" + f.name: getattr(wd, f.name) for f in dataclasses.fields(WholeDeterminationConfig)}


#: The Whole Determination fields of a WholeDeterminationGrid task ("wd_" + WholeDeterminationConfig's fields).
WD_FIELDS = _wd_fields()
_NOT_READ_BY_WD = frozenset(NOT_READ_BY_WHOLE_DETERMINATION) | {"replicates"}


def to_json(study: Study) -> dict:
  """A JSON-able form of the study (stored as study.json; `from_json` inverts it)."""
  parts = []
  for p in study.parts:
    if isinstance(p, HarGrid):
      parts.append({"type": "har", **{f.name: getattr(p, f.name) for f in dataclasses.fields(HarGrid)}})
    else:
      parts.append({"type": "whole_determination" if isinstance(p, WholeDeterminationGrid) else "eavesdrop",
                    "base": [list(kv) for kv in p.base],
                    "axes": [[k, list(v)] for k, v in p.axes], "replicates": p.replicates})
  return {"name": study.name, "summary": study.summary, "parts": parts}


def differences(stored: dict, new: dict) -> list[str]:
  """What differs between two studies' JSON forms (`to_json`), as 'field: stored X, now Y' items."""
  def fields(d: dict) -> dict:
    parts = d.get("parts", [])
    out = {"study": d.get("name"), "parts": len(parts)}
    for i, p in enumerate(parts):
      out.update({(f"part {i + 1} {k}" if len(parts) > 1 else k): v for k, v in p.items()})
    return out
  diff = storage.config_differences(fields(stored), fields(new))
  return sorted(diff, key=lambda d: not d.startswith("study:"))          # the study's name first


def _tuples(v):
  return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def from_json(d: dict) -> Study:
  parts = []
  for p in d["parts"]:
    if p["type"] == "har":
      parts.append(HarGrid(**{k: _tuples(v) for k, v in p.items() if k != "type"}))
    else:
      grid = WholeDeterminationGrid if p["type"] == "whole_determination" else EavesdropGrid
      parts.append(grid(base=tuple((k, _tuples(v)) for k, v in p["base"]),
                                 axes=tuple((k, tuple(v)) for k, v in p["axes"]), replicates=p["replicates"]))
  return Study(d["name"], tuple(parts), d.get("summary", ""))
