"""Label-count attacks on last-layer gradients: pure functions that run under jax.jit and jax.vmap.

Every attack has the signature `attack(grads: LastLayerGrads, num_samples: NumSamples, *, ...) -> i32[C]` and
returns predicted label counts summing exactly to `num_samples` (a Python int, or under vmap one traced N per
update). One call handles one gradient; vmap for many:

  >>> import jax, jax.numpy as jnp
  >>> import jaxleak.attacks as A
  >>> from jaxleak import LastLayerGrads
  >>> b = jnp.array([-0.25, -0.05, 0.05, 0.25])
  >>> grads = LastLayerGrads(kernel=jnp.tile(b, (8, 1)) / 8, bias=b)
  >>> A.ebi(grads, 10).tolist()
  [8, 2, 0, 0]
  >>> many = jax.tree.map(lambda x: jnp.stack([x] * 3), grads)           # a leading axis K = 3
  >>> jax.jit(jax.vmap(lambda g: A.ebi(g, 10)))(many).shape
  (3, 4)
  >>> jax.jit(jax.vmap(A.ebi))(many, jnp.array([10, 20, 40])).sum(axis=1).tolist()   # one N per update
  [10, 20, 40]

By name, with one calling convention for all (`run` passes each attack the context fields it takes):

  >>> A.run("ilrg_uniform", grads, 10, A.AttackContext(key=jax.random.key(0))).tolist()
  [5, 3, 2, 0]

The Eavesdrop attacks (Class Sniffing, Quantity Inference, Whole Determination) read an aggregated update and the
attacker's per-label updates instead; they live in `jaxleak.attacks.eavesdrop`.
"""
from jaxleak.attacks.registry import (ATTACK_GROUPS, HAR_PAPER_ATTACKS, HAR_REFERENCE_ATTACKS, Attack, AttackContext,
                                      expand_groups, get, info, names, register, run)
# Importing the attack modules registers their attacks.
from jaxleak.attacks import eavesdrop  # noqa: E402  (after the registry)
from jaxleak.attacks._common import INVALID_COUNT  # noqa: E402
from jaxleak.attacks.baselines import analytic, idlg, random_guess, yin  # noqa: E402
from jaxleak.attacks.disaggregation import (disaggregate_rounds, participation_rank,  # noqa: E402
                                            rounds_identifiable, rounds_participation)
from jaxleak.attacks.bias import (bias_corrected, class_embeddings, ebi, gcd, gcd_candidates, ilrg,  # noqa: E402
                                  ilrg_solution, ilrg_uniform, llbg, llbg_original)
from jaxleak.attacks.rlu import RLUBasis, average_bases, rlu, rlu_basis_from_features, rlu_solution  # noqa: E402
from jaxleak.attacks.weight import (LLGStarParams, estimate_llg_star_params, llg, llg_har, llg_star,  # noqa: E402
                                    llg_star_har, rescale_llg_star_params)
from jaxleak.attacks.weighted import unweight_counts  # noqa: E402
from jaxleak.types import LastLayerGrads, LastLayerParams  # noqa: E402

__all__ = [
    "ATTACK_GROUPS", "INVALID_COUNT", "Attack", "AttackContext", "HAR_PAPER_ATTACKS", "HAR_REFERENCE_ATTACKS",
    "LLGStarParams", "LastLayerGrads", "LastLayerParams", "analytic", "bias_corrected", "class_embeddings",
    "disaggregate_rounds", "eavesdrop", "ebi", "estimate_llg_star_params", "gcd", "gcd_candidates", "expand_groups",
    "get", "idlg", "ilrg", "ilrg_solution", "ilrg_uniform", "info", "llbg", "llbg_original", "llg", "llg_har",
    "llg_star", "llg_star_har", "names", "participation_rank", "random_guess", "register",
    "rescale_llg_star_params", "rlu", "rounds_identifiable", "rounds_participation", "RLUBasis", "average_bases",
    "rlu_basis_from_features", "rlu_solution", "run", "unweight_counts", "yin",
]
