"""Studies: a paper's whole grid as one resumable, shardable command (`python -m jaxleak.study`).

  spec     the study config (parts: HarGrid, EavesdropGrid, WholeDeterminationGrid), presets and field overrides
  plan     tasks keyed by their configuration fingerprint, grouped by the gradient pass they share; shards
  cost     what each group costs before it runs: passes, FLOPs, the FLOP floor (--dry_run)
  engine   runs groups (LDP settings vmapped in one compilation), writes records
  store    the study folder: records, timings, index, checkpoints
  collect  one tidy table from the records
"""
from jaxleak.runs.study.engine import SETTINGS_PER_CALL, RunSummary, adopt_folder, run_plan, status, sweep_chunk
from jaxleak.runs.study.plan import Group, Plan, Task, describe, make_plan
from jaxleak.runs.study.spec import (PRESETS, EavesdropGrid, HarGrid, Study, WholeDeterminationGrid, ldp_product,
                                     override, preset)
from jaxleak.runs.study.store import Store

__all__ = ["EavesdropGrid", "Group", "HarGrid", "PRESETS", "Plan", "RunSummary", "SETTINGS_PER_CALL", "Store", "Study",
           "Task", "WholeDeterminationGrid", "adopt_folder", "describe", "ldp_product", "make_plan", "override",
           "preset", "run_plan", "status", "sweep_chunk"]
