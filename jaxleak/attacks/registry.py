"""Name -> attack registry for configs and command lines."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax

from jaxleak.attacks import baselines, bias, weight
from jaxleak.types import LastLayerGrads, LastLayerParams


@dataclasses.dataclass(frozen=True)
class Attack:
  """A registered attack.

  Attributes:
    name: registry name.
    fn: `fn(grads, num_samples, **kwargs) -> i32[C]`.
    signal: 'weight', 'bias' or 'none' (which gradient the attack reads).
    requires: keyword arguments the caller must supply: any of 'key', 'star_params' (from
      `estimate_llg_star_params` with `star_method`), 'head' (the head's LastLayerParams).
    star_method: for attacks requiring 'star_params', the estimation method they expect.
    summary: one line for --help and tables.
  """
  name: str
  fn: Callable[..., jax.Array]
  signal: str
  requires: tuple[str, ...] = ()
  star_method: Optional[str] = None
  summary: str = ""


_REGISTRY: dict[str, Attack] = {}


def register(attack: Attack) -> Attack:
  if attack.name in _REGISTRY:
    raise ValueError(f"attack {attack.name!r} is already registered")
  _REGISTRY[attack.name] = attack
  return attack


for _a in (
    Attack("llg", weight.llg, "weight", summary="LLG (Wainakh et al.), stage 2 raises the selected class"),
    Attack("llg_har", weight.llg_har, "weight", summary="LLG as the HAR code runs it (stale-index stage 2)"),
    Attack("llg_star", weight.llg_star, "weight", ("star_params",), "wainakh",
           summary="LLG* (Wainakh et al.): impact and offsets from dummy batches through the model"),
    Attack("llg_star_har", weight.llg_star_har, "weight", ("star_params",), "har",
           summary="LLG* as the HAR code runs it (whole-matrix sums, stale index)"),
    Attack("ebi", bias.ebi, "bias", summary="EBI: empirical bias impact sum(neg)/N"),
    Attack("llbg", bias.llbg, "bias", summary="LLBG as the HAR paper ran it (llbgAVG: LLG-style impact)"),
    Attack("llbg_original", bias.llbg_original, "bias",
           summary="LLBG with Gat & Sharif's impact -(1-conf)/B and offset S/C"),
    Attack("ilrg", bias.ilrg, "bias", ("head",), summary="iLRG (Ma et al.): embeddings, head probabilities, pinv"),
    Attack("ilrg_uniform", bias.ilrg_uniform, "bias", ("key",),
           summary="iLRG with uniform probabilities, as the HAR code runs it"),
    Attack("random", baselines.random_guess, "none", ("key",), summary="uniformly random labels"),
    Attack("idlg", baselines.idlg, "weight", ("key",), summary="one label from iDLG, the rest random"),
    Attack("analytic", baselines.analytic, "bias", ("key",), summary="classes with negative bias once, rest random"),
):
  register(_a)

#: The HAR paper's five attacks, each as its method's paper defines it (LLBG as the HAR paper ran it).
HAR_PAPER_ATTACKS = ("llg", "llg_star", "ebi", "llbg", "ilrg")
#: The same five exactly as the HAR reference code runs them.
HAR_REFERENCE_ATTACKS = ("llg_har", "llg_star_har", "ebi", "llbg", "ilrg_uniform")


def names() -> tuple[str, ...]:
  """All registered attack names, sorted."""
  return tuple(sorted(_REGISTRY))


def info(name: str) -> Attack:
  """The registry record of `name`; raises KeyError listing the valid names."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise KeyError(f"unknown attack {name!r}; valid names: {', '.join(names())}") from None


def get(name: str) -> Callable[..., jax.Array]:
  """The attack function registered as `name`; raises KeyError listing the valid names."""
  return info(name).fn


def run(name: str, grads: LastLayerGrads, num_samples: int, *, key: Optional[jax.Array] = None,
        star_params: Optional[weight.LLGStarParams] = None,
        head: Optional[LastLayerParams] = None) -> jax.Array:
  """Calls attack `name` with just the context it requires; anything else given is ignored.

  This gives every attack one signature, so a driver can vmap a list of attacks uniformly.
  """
  attack = info(name)
  provided = {"key": key, "star_params": star_params, "head": head}
  kwargs = {}
  for req in attack.requires:
    if provided[req] is None:
      raise ValueError(f"attack {name!r} requires {req}=...; "
                       + {"key": "pass a jax.random.key.",
                          "star_params": f"estimate it with estimate_llg_star_params(..., method="
                                         f"{attack.star_method!r}).",
                          "head": "pass the head's LastLayerParams at the attacked model."}[req])
    kwargs[req] = provided[req]
  return attack.fn(grads, num_samples, **kwargs)
