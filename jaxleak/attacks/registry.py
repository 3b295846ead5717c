"""Name -> attack registry for configs and command lines. Each attack registers itself beside its definition:

  @register("ebi", signal="bias", summary="EBI: empirical bias impact sum(neg)/N")
  def ebi(grads, num_samples): ...

An attack's keyword-only parameters that are fields of `AttackContext` (key, star_params, head, local_batch_size,
local_steps, confidence, rlu_basis, max_samples) are what it takes from the context; `run` passes exactly those, so
every attack is called with one signature:

  >>> import jax.numpy as jnp
  >>> from jaxleak import LastLayerGrads
  >>> g = LastLayerGrads(kernel=jnp.zeros((4, 3)), bias=jnp.array([-0.5, 0.25, 0.25]))
  >>> run("llbg_original", g, 4).tolist()                                     # single step: B = N = 4
  [4, 0, 0]
  >>> run("llbg_original", g, 4, AttackContext(local_batch_size=2, local_steps=2)).tolist()   # B = 2, S = 2
  [2, 1, 1]
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional, Sequence

import jax

from jaxleak.types import LastLayerGrads, LastLayerParams, NumSamples


@dataclasses.dataclass(frozen=True)
class AttackContext:
  """Everything an attack may need besides the gradient and N. Fields are None where a run has no such thing.

  Attributes:
    key: a PRNG key (attacks with random labels).
    star_params: LLGStarParams from `estimate_llg_star_params` with the attack's `star_method`.
    head: the attacked head's LastLayerParams (full iLRG).
    local_batch_size: B, samples per local step behind the update (None: single step, B = N).
    local_steps: S, local steps behind the update (1 for FedSGD).
    confidence: assumed mean confidence of the correct class (LLBG's gamma; 0 for untrained models).
    rlu_basis: RLUBasis, the expected per-label head gradients at the attacked model (RLU).
    max_samples: a static bound on a traced N (one N per update under vmap), for the attacks that pad with random
      labels (they draw that many); unused with a static N.
  """
  key: Optional[jax.Array] = None
  star_params: Any = None
  head: Optional[LastLayerParams] = None
  local_batch_size: Optional[int] = None
  local_steps: Optional[int] = None
  confidence: Optional[float] = None
  rlu_basis: Any = None
  max_samples: Optional[int] = None


CONTEXT_FIELDS = tuple(f.name for f in dataclasses.fields(AttackContext))

_HOW_TO = {"key": "pass a jax.random.key (fold in the update's id so results do not depend on chunking).",
           "star_params": "estimate them with estimate_llg_star_params(..., method={method!r}).",
           "head": "pass the head's LastLayerParams at the attacked model.",
           "rlu_basis": "estimate it with jaxleak.federated.rlu.simulate_rlu_basis (or "
                        "attacks.rlu_basis_from_features)."}


@dataclasses.dataclass(frozen=True)
class Attack:
  """A registered attack.

  Attributes:
    name: registry name.
    fn: `fn(grads, num_samples, **context_fields) -> i32[C]`.
    signal: 'weight', 'bias' or 'none' (which gradient the attack reads).
    takes: the AttackContext fields the attack accepts (its keyword-only parameters).
    requires: those of them the caller must supply.
    star_method: for attacks requiring 'star_params', the estimation method they expect.
    summary: one line for --help and tables.
  """
  name: str
  fn: Callable[..., jax.Array]
  signal: str
  takes: tuple[str, ...] = ()
  requires: tuple[str, ...] = ()
  star_method: Optional[str] = None
  summary: str = ""


_REGISTRY: dict[str, Attack] = {}
SIGNALS = ("weight", "bias", "none")


def register(name: str, *, signal: str, requires: tuple[str, ...] = (), star_method: Optional[str] = None,
             summary: str = "") -> Callable[[Callable], Callable]:
  """Decorator: registers `fn` as attack `name`. Its keyword-only parameters named like AttackContext fields are
  filled from the context by `run`; any other keyword-only parameter needs a default (a plain option)."""
  def deco(fn):
    if name in _REGISTRY:
      raise ValueError(f"attack {name!r} is already registered")
    if signal not in SIGNALS:
      raise ValueError(f"attack {name!r}: signal must be one of {SIGNALS}, got {signal!r}.")
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = [p.name for p in params if p.name not in CONTEXT_FIELDS and p.default is p.empty]
    if unknown:
      raise ValueError(f"attack {name!r}: required keyword-only parameters {unknown} are not AttackContext fields "
                       f"({', '.join(CONTEXT_FIELDS)}); add them there or give them defaults.")
    kw_only = [p.name for p in params if p.name in CONTEXT_FIELDS]
    missing = [r for r in requires if r not in kw_only]
    if missing:
      raise ValueError(f"attack {name!r}: requires {missing} but does not take them.")
    _REGISTRY[name] = Attack(name, fn, signal, tuple(kw_only), tuple(requires), star_method, summary)
    return fn
  return deco


#: The HAR paper's five attacks, each as its method's paper defines it (LLBG as the HAR paper ran it).
HAR_PAPER_ATTACKS = ("llg", "llg_star", "ebi", "llbg", "ilrg")
#: The same five exactly as the HAR reference code runs them.
HAR_REFERENCE_ATTACKS = ("llg_har", "llg_star_har", "ebi", "llbg", "ilrg_uniform")


#: Names that stand for several attacks wherever attacks are listed by name (`--attacks`, a study's
#: `--set attacks=`): every registered attack, the HAR paper's five, those five as its code runs them, and every
#: attack by the gradient it reads (`Attack.signal`: 'bias' or 'weight'; a bias-free head leaves the 'weight' ones).
ATTACK_GROUPS = ("all", "paper", "har_code", "bias", "weight")


def names() -> tuple[str, ...]:
  """All registered attack names, sorted."""
  return tuple(sorted(_REGISTRY))


def expand_groups(values: Sequence[str], what: str = "attacks") -> tuple[str, ...]:
  """`values` with each name of ATTACK_GROUPS replaced, in place, by its attacks ('all': `names()`, 'paper':
  HAR_PAPER_ATTACKS, 'har_code': HAR_REFERENCE_ATTACKS, 'bias' / 'weight': the registered attacks of that signal,
  sorted). An attack that two entries name (a group and the attack itself, or two groups) is kept once, at its first
  place. ValueError naming `what` for an empty list, an unknown name or one listed twice.

  >>> expand_groups(["paper", "gcd", "ebi"])
  ('llg', 'llg_star', 'ebi', 'llbg', 'ilrg', 'gcd')
  """
  values = list(values)
  choices = f"{', '.join(names())}; or a group: {', '.join(ATTACK_GROUPS)}"
  if not values:
    raise ValueError(f"{what} is empty; choose from {choices}.")
  unknown = [v for v in values if not isinstance(v, str) or (v not in _REGISTRY and v not in ATTACK_GROUPS)]
  if unknown:
    raise ValueError(f"{what}: unknown {unknown}; choose from {choices}.")
  repeated = sorted({v for v in values if values.count(v) > 1})
  if repeated:
    raise ValueError(f"{what}: {repeated} listed more than once; list each once.")
  groups = {"all": names(), "paper": HAR_PAPER_ATTACKS, "har_code": HAR_REFERENCE_ATTACKS,
            **{signal: tuple(n for n in names() if _REGISTRY[n].signal == signal) for signal in ("bias", "weight")}}
  out = []
  for value in values:
    for name in groups.get(value, (value,)):
      if name not in out:
        out.append(name)
  return tuple(out)


def info(name: str) -> Attack:
  """The registry record of `name`; raises KeyError listing the valid names."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise KeyError(f"unknown attack {name!r}; valid names: {', '.join(names())}") from None


def get(name: str) -> Callable[..., jax.Array]:
  """The attack function registered as `name`; raises KeyError listing the valid names."""
  return info(name).fn


def run(name: str, grads: LastLayerGrads, num_samples: NumSamples,
        context: Optional[AttackContext] = None) -> jax.Array:
  """Calls attack `name` with the context fields it takes (those set); raises naming a missing required one."""
  attack = info(name)
  if context is not None and not isinstance(context, AttackContext):
    fields = ", ".join(f.name for f in dataclasses.fields(AttackContext))
    raise TypeError(f"context must be an AttackContext (or None), got {type(context).__name__}; build one with "
                    f"AttackContext(key=..., head=..., ...), fields: {fields}.")
  context = context or AttackContext()
  kwargs = {}
  for field in attack.takes:
    value = getattr(context, field)
    if value is not None:
      kwargs[field] = value
    elif field in attack.requires:
      raise ValueError(f"attack {name!r} requires {field}=...; " + _HOW_TO[field].format(method=attack.star_method))
  return attack.fn(grads, num_samples, **kwargs)
