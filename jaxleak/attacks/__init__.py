"""Label-count attacks on last-layer gradients: pure functions that run under jax.jit and jax.vmap.

Every attack has the signature `attack(grads: LastLayerGrads, num_samples: int, *, ...) -> i32[C]` and returns
predicted label counts summing exactly to `num_samples`. One call handles one gradient; vmap for many:

  >>> import jax, jaxleak.attacks as A
  >>> counts = jax.jit(jax.vmap(lambda g: A.ebi(g, 100)))(grads)      # grads with a leading axis K -> [K, C]

The Eavesdrop attacks (Class Sniffing, Quantity Inference, Whole Determination) read an aggregated update and the
attacker's per-label updates instead; they live in `jaxleak.attacks.eavesdrop`.
"""
from jaxleak.attacks import eavesdrop
from jaxleak.attacks._common import INVALID_COUNT
from jaxleak.attacks.baselines import analytic, idlg, random_guess
from jaxleak.attacks.bias import class_embeddings, ebi, ilrg, ilrg_solution, ilrg_uniform, llbg, llbg_original
from jaxleak.attacks.registry import (HAR_PAPER_ATTACKS, HAR_REFERENCE_ATTACKS, Attack, get, info, names,
                                      register, run)
from jaxleak.attacks.weight import (LLGStarParams, estimate_llg_star_params, llg, llg_har, llg_star,
                                    llg_star_har)
from jaxleak.types import LastLayerGrads, LastLayerParams

__all__ = [
    "INVALID_COUNT", "Attack", "HAR_PAPER_ATTACKS", "HAR_REFERENCE_ATTACKS", "LLGStarParams", "LastLayerGrads",
    "LastLayerParams", "analytic", "class_embeddings", "eavesdrop", "ebi", "estimate_llg_star_params", "get", "idlg", "ilrg",
    "ilrg_solution", "ilrg_uniform", "info", "llbg", "llbg_original", "llg", "llg_har", "llg_star", "llg_star_har", "names",
    "random_guess", "register", "run",
]
