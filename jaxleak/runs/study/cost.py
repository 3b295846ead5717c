"""What a study's groups cost before they run: window (or example) passes through the model, FLOPs, and the FLOP
floor at this machine's matmul peak (`python -m jaxleak.study run ... --dry_run`, `benchmarks/study.py grid`)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from jaxleak.runs.study.plan import Plan, dealing, describe, loaded_clients, loaded_dataset, loaded_pools


def estimate_cost(plan: Plan, loaded: Optional[dict] = None) -> dict[str, float]:
  """Estimated work per group, in window (or example) passes through the model, a forward pass counting 1 and a
  backward pass 2; HAR datasets are loaded (once each) and sampled as the run samples them to count every
  client's updates (`updates_per_client`); LLG*'s dummy passes count once per attacked model (each trained fold)
  and N, in the first group that needs them. For --dry_run and the FLOP floor of benchmarks/study.py."""
  from jaxleak import attacks as A
  from jaxleak.runs.study.engine import eavesdrop_config
  loaded = {} if loaded is None else loaded
  out, star_seen = {}, set()
  for g in plan.groups:
    c = g.tasks[0].config
    if g.kind == "har":
      key = _data_key(c)
      counts = updates_per_client(loaded, c)
      num_classes = loaded_dataset(loaded, *key).num_classes
      n = c["num_samples"]
      ks = sorted({t.config.get("aggregate_clients", 1) for t in g.tasks})
      # the group's one pass: every update, or (no K = 1) only those that reach an aggregate of one of its K
      updates = (int(np.sum(counts)) if dealing(g.tasks) != "once"    # dealt every round: every update
                 else aggregated_updates(counts, ks, c["seed"]))
      if c["multi_step"] is not None:
        _, b, s = c["multi_step"]
        # The last local step's body gradient never reaches the head delta; XLA prunes that backward (a
        # forward-only last step written out measured the same), so the last step counts as a forward pass.
        out[g.key] = updates * b * (3.0 * (s - 1) + 1.0)
      else:
        full = any(t.config["tau"] > 0 and t.config["clip_scope"] == "all" for t in g.tasks)
        out[g.key] = updates * n * (3.0 if full else 1.0)
      # LLG*'s estimates are shared by the groups that attack the same models with the same N (scoring's
      # in-process memo), so they count once, in the first such group.
      for k in ks:
        n_attacked = n * k                                   # the N the attacks read (K N for aggregates)
        models_key = (key, c["model"], c.get("head_bias", True), c.get("dropout"), c["checkpoint_dir"],
                      c["num_clients"], n_attacked)
        for method in {A.info(a).star_method for a in c["attacks"]} - {None}:
          if models_key + (method,) not in star_seen:
            star_seen.add(models_key + (method,))
            out[g.key] += llg_star_passes([method], num_classes, n_attacked) * (len(counts) if c["checkpoint_dir"]
                                                                                 else 1)
    else:
      cfg = eavesdrop_config(c)
      # examples a participant holds (ten labels assumed, as MNIST and digits)
      if g.kind == "whole_determination":
        mean_factor = sum(c["wd_factors"]) / len(c["wd_factors"])
        per_client = c["wd_total_per_label"] * mean_factor * 10 / cfg.num_participants
      elif cfg.partition == "dirichlet":
        per_client = cfg.samples_per_participant
      else:
        per_client = sum(cfg.main_labels) / 2 * cfg.samples_per_label + cfg.other_samples * 10
      # Whole Determination: at most wd_max_rounds + wd_window rounds per trial (it stops at the last stage).
      rounds = (c["wd_trials"] * (c["wd_max_rounds"] + c["wd_window"]) if g.kind == "whole_determination"
                else cfg.rounds * c["replicates"])
      # the selected participants, the attacker's ten per-label updates, and (attacker_participates) at most one
      # upload of its own a round, recomputed to remove it from the aggregate
      uploads = cfg.num_selected + 10 + (1 if cfg.attacker_participates else 0)
      out[g.key] = rounds * uploads * cfg.local.epochs * per_client * 3.0
  return out


def aggregated_updates(updates_per_client, clients_per_round, seed: int) -> int:
  """The client updates one gradient pass computes for the clients-per-round values K in `clients_per_round`
  (`engine._shared_pass`): all of them when one K is 1, otherwise the union over the K of the updates that reach
  an aggregate: each client's first R_c(K), R_c(K) the rounds of its cohort, dealt as `prepare` deals them."""
  import jax

  from jaxleak.runs.leakage import aggregation
  from jaxleak.runs.leakage.prepare import COHORTS
  counts = np.asarray(updates_per_client)
  if 1 in clients_per_round:
    return int(counts.sum())
  needed = np.zeros(len(counts), np.int64)                     # per client: the most rounds any K needs of it
  for k in clients_per_round:
    for members in aggregation.deal_cohorts(len(counts), k, jax.random.fold_in(jax.random.key(seed), COHORTS)):
      needed[members] = np.maximum(needed[members], counts[members].min())
  return int(needed.sum())


def updates_per_client(loaded: dict, config: dict) -> np.ndarray:
  """i64[clients]: the updates of each client a HAR task attacks, sampled as `prepare` samples them (its clients,
  Dirichlet re-deal, sampling, N, multi-step queries; host-side index draws, no model), memoised in `loaded`."""
  import jax

  from jaxleak import data as D
  from jaxleak.runs.leakage.prepare import SAMPLER, attacked_clients
  from jaxleak.runs.study.engine import leakage_config
  cfg = leakage_config(config)
  key = ("updates",) + _data_key(config) + (cfg.clients, cfg.num_clients, cfg.dirichlet_alpha, cfg.dirichlet_clients,
                                            cfg.sampling, cfg.num_samples, cfg.local is not None)
  if key not in loaded:
    clients = attacked_clients(loaded_dataset(loaded, *_data_key(config)), cfg)
    _, owner = D.sample_clients(cfg.sampling, jax.random.fold_in(jax.random.key(cfg.seed), SAMPLER), clients,
                                cfg.num_samples, queries=cfg.local is not None)
    loaded[key] = np.bincount(owner, minlength=clients.num_clients).astype(np.int64)
  return loaded[key]


def _data_key(config: dict) -> tuple:
  """What a HAR group's windows depend on: (dataset, data_dir, synthetic_scale, seed), `loaded_*`'s arguments."""
  return config["dataset"], config["data_dir"], config["synthetic_scale"], config["seed"]


def llg_star_passes(methods, num_classes: int, num_samples: int) -> int:
  """Forward window passes of LLG*'s estimation for one attacked model (per trained fold, or once untrained):
  C batches of N dummies for each estimation method ('wainakh', 'har'), plus C (C - 1) dummies for 'har'."""
  c = num_classes
  return sum(c * num_samples + (c * (c - 1) if method == "har" else 0) for method in set(methods))


def forward_flops_per_example(model_name: str, num_classes: int, example_shape: tuple[int, ...]) -> float:
  """FLOPs of one example's forward pass through the registered model (`jaxleak.flops.count_flops` on its jaxpr,
  loop trip counts included, every operation counted; nothing is computed or compiled)."""
  import jax
  import jax.numpy as jnp

  from jaxleak import flops, models
  model = models.build(model_name, num_classes)
  x = jax.ShapeDtypeStruct((2, *example_shape), jnp.float32)
  v = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros(x.shape, x.dtype), train=False))
  return flops.count_flops(lambda v, x: model.apply(v, x), v, x).total / 2


def estimate_flops(plan: Plan, loaded: Optional[dict] = None,
                   passes: Optional[dict[str, float]] = None) -> dict[str, float]:
  """group key -> FLOPs: `estimate_cost`'s passes x one example's forward FLOPs for the group's model and example
  shape (a backward pass counting two forwards). The work a study cannot do with less; with this machine's matmul
  peak, its FLOP floor in seconds (--dry_run, benchmarks/study.py)."""
  from jaxleak.runs.study.engine import eavesdrop_config
  loaded = {} if loaded is None else loaded
  passes = estimate_cost(plan, loaded) if passes is None else passes
  per_example, out = {}, {}
  for g in plan.groups:
    c = g.tasks[0].config
    if g.kind == "har":
      shape = tuple(loaded_clients(loaded, *_data_key(c)).windows.shape[1:])
      classes = loaded_dataset(loaded, *_data_key(c)).num_classes
    else:
      train, _ = loaded_pools(loaded, eavesdrop_config(c))
      shape, classes = tuple(train.example_shape), train.num_classes
    model_key = (c["model"], classes, shape)
    if model_key not in per_example:
      per_example[model_key] = forward_flops_per_example(*model_key)
    out[g.key] = passes[g.key] * per_example[model_key]
  return out


#: What whole studies took against their FLOP floor here (BUILD_NOTES.md, "Speed"): a 2-core CPU.
MEASURED_FLOOR_RATIOS = "on a 2-core CPU, whole HAR grids took 2.0-3.9x their floor, TinyHAR-only groups up to ~35x"


def describe_with_cost(plan: Plan, done: Optional[set] = None, loaded: Optional[dict] = None,
                       peak_gflops: Optional[float] = None) -> str:
  """`describe` with each group's estimated work (window passes, TFLOP) and the totals; with `peak_gflops`
  (this machine's matmul rate) also the FLOP floor in time. Groups whose tasks are all done count as remaining 0."""
  loaded = {} if loaded is None else loaded
  cost = estimate_cost(plan, loaded)
  work = estimate_flops(plan, loaded, cost)
  lines = describe(plan, done).split("\n")
  out = [lines[0]] + [f"{line}  ~{cost[g.key]:.3g} {'window' if g.kind == 'har' else 'example'} passes, "
                      f"{work[g.key] / 1e12:.3g} TFLOP" for line, g in zip(lines[1:], plan.groups)]
  total = sum(work.values())
  har = {g.kind == "har" for g in plan.groups}
  unit = "window" if har == {True} else "example" if har == {False} else "window or example"
  out.append(f"estimated total: {sum(cost.values()):.3g} passes (a forward pass of one {unit} = 1), "
             f"{total / 1e12:.3g} TFLOP")
  done = done or set()
  remaining = sum(work[g.key] for g in plan.groups if not all(t.key in done for t in g.tasks))
  if remaining < total:
    out.append(f"still to run: {remaining / 1e12:.3g} TFLOP (groups with every task done count 0)")
  if peak_gflops:
    floor = remaining / (peak_gflops * 1e9)
    out.append(f"FLOP floor: {_duration(floor)} at this machine's f32 matmul peak ({peak_gflops:,.0f} GFLOP/s, "
               "measured now); a floor, not a forecast" + (f": {MEASURED_FLOOR_RATIOS} (BUILD_NOTES.md)"
                                                           if True in har else ""))
  tasks = sum(len(g.tasks) for g in plan.groups if g.kind == "har" and not all(t.key in done for t in g.tasks))
  if tasks > UNPRICED_TASKS_NOTED:
    out.append(f"not priced above: each of the {tasks:,} HAR tasks' attacks, scores and record after its group's "
               f"pass (LDP sweeps; ~{MEASURED_MS_PER_RECORD} ms a task on a 2-core CPU, BUILD_NOTES.md)")
  return "\n".join(out)


#: A dry run of more HAR tasks than this says what its estimate leaves out (a sweep's per-setting work).
UNPRICED_TASKS_NOTED = 100
#: A HAR task's attacks, scoring and record after the shared pass, measured on synthetic_tiny with 10,000 LDP settings
#: (2026-12-06, 2 CPU cores): 40.6 s for the group, of which ~2 s the pass (the sweep and records the rest).
MEASURED_MS_PER_RECORD = 4


def describe_dry_run(plan: Plan, done: Optional[set] = None, loaded: Optional[dict] = None) -> str:
  """`describe_with_cost` with the FLOP floor at this machine's f32 matmul peak, measured now (about a second)."""
  from jaxleak.flops import matmul_peak
  return describe_with_cost(plan, done, loaded, peak_gflops=matmul_peak())


def _duration(seconds: float) -> str:
  if seconds < 10:
    return f"{seconds:.2g} s"
  if seconds < 120:
    return f"{seconds:.0f} s"
  if seconds < 7200:
    return f"{seconds / 60:.0f} min"
  return f"{seconds / 3600:.1f} h"
