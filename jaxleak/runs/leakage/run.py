"""The label-leakage experiment as a library call: single step (FedSGD) or, with `cfg.local`, multi-step
(FedAvg); optional LDP; untrained or trained (per-client LOSO fold) global models.

  dataset -> clients (one per subject) -> sampler -> all updates of all clients
  -> each client's update at its global model (one compiled function, fixed-size calls)
  -> every attack vmapped over all updates -> per-update and per-client metrics.

The update of each batch is computed once and shared by all attacks. Randomness comes from one key per run,
folded in by purpose, subject id and update index, so results do not depend on chunking or on which other clients
are in the run.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxleak import data as D
from jaxleak.federated import apply_batch_ldp
from jaxleak.privacy import LdpConfig
from jaxleak.runs.leakage.config import LeakageConfig
from jaxleak.runs.leakage.prepare import log, noise_keys, prepare
from jaxleak.runs.leakage.scoring import LeakageResult, attack_and_score
from jaxleak.runs.leakage.updates import compute_heads_and_norms, compute_updates


def run_leakage(cfg: LeakageConfig, *, dataset: Optional[D.HarDataset] = None, variables: Optional[dict] = None,
                progress: Optional[Callable[[str], None]] = None, resume_dir: Optional[str] = None) -> LeakageResult:
  """Runs the leakage experiment (single- or multi-step, as cfg.local says).

  Args:
    cfg: the configuration (cfg.ldp: the clients' local DP in single-step runs).
    dataset: an already loaded dataset (default: load cfg.dataset).
    variables: the global model's variables (default: a fresh Xavier-normal init from the seed, the same for all
      clients, as the reference's untrained setting; or the trained folds of cfg.checkpoint_dir).
    progress: called with progress messages (e.g. absl logging.info); None for silence.
    resume_dir: a folder for checkpoints of the gradient pass (the drivers': `resume_folder(output_dir)`): a run
      killed mid-pass and run again continues from them to the same results, bit for bit. Delete it after the
      run's results are written (`storage.delete_resume_folder`). None: not resumable.
  """
  prep = prepare(cfg, dataset, variables, progress)
  t0 = time.perf_counter()
  grads = compute_updates(prep, cfg, cfg.ldp, progress, resume_dir=resume_dir)
  return attack_and_score(prep, cfg, grads, {**prep.timings, "gradients_s": time.perf_counter() - t0})


def run_ldp_sweep(cfg: LeakageConfig, settings: dict[str, LdpConfig], *,
                  dataset: Optional[D.HarDataset] = None, variables: Optional[dict] = None,
                  progress: Optional[Callable[[str], None]] = None,
                  resume_dir: Optional[str] = None) -> dict[str, LeakageResult]:
  """Runs the single-step experiment once per LDP setting, sharing data, updates and the gradient pass.

  Batch-granularity settings share one pass that yields every update's head gradient and whole-model gradient
  norm (a full backward only if some setting clips the whole model); each setting is then `apply_batch_ldp`
  with the same noise keys `run_leakage` would use, so results equal separate runs. Per-example settings
  recompute their gradients. resume_dir: as `run_leakage`'s, for every gradient pass of the sweep.
  """
  if cfg.local is not None:
    raise ValueError("run_ldp_sweep is for single-step runs; multi-step LDP is per local step (LocalSteps.ldp).")
  for ldp in settings.values():                      # each setting as a run of its own would be checked
    dataclasses.replace(cfg, ldp=ldp).validate()
  prep = prepare(cfg, dataset, variables, progress)
  shared = [s for s in settings.values() if not s.per_example]
  base = None
  if shared:
    t0 = time.perf_counter()
    if any(s.needs_full_gradient for s in shared):
      base = compute_heads_and_norms(prep, cfg, progress, resume_dir=resume_dir)
    else:
      base = (compute_updates(prep, cfg, LdpConfig(), progress, resume_dir=resume_dir),
              np.full(len(prep.indices), np.nan, np.float32))
    base_s = time.perf_counter() - t0
    noises = noise_keys(prep.dropout_keys)
    apply = jax.jit(jax.vmap(apply_batch_ldp, in_axes=(0, 0, None, 0)), static_argnums=2)
  results = {}
  for name, ldp in settings.items():
    t0 = time.perf_counter()
    if ldp.per_example:
      grads = compute_updates(prep, cfg, ldp, progress, resume_dir=resume_dir)
      timings = {**prep.timings, "gradients_s": time.perf_counter() - t0}
    else:
      grads = jax.tree.map(np.asarray, apply(base[0], jnp.asarray(base[1]), ldp, noises))
      timings = {**prep.timings, "shared_gradients_s": base_s, "ldp_s": time.perf_counter() - t0}
    results[name] = attack_and_score(prep, dataclasses.replace(cfg, ldp=ldp), grads, timings)
    log(progress, f"LDP setting {name}: done")
  return results
