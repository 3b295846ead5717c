"""The Eavesdrop paper's attacks against FedAvg with secure aggregation (Class Sniffing, Quantity Inference,
Whole Determination) and its defences.

  python experiments/eavesdrop.py                                   # Tables III+IV: digits, MLP, 100 rounds
  python experiments/eavesdrop.py --model=cnn
  python experiments/eavesdrop.py --experiment=compression          # Table VI (top-CR upload compression)
  python experiments/eavesdrop.py --experiment=dropout              # dropout defence: with vs without
  python experiments/eavesdrop.py --experiment=sweep --sweep=batch_size          # Fig. 6 (also epochs: Fig. 7,
  python experiments/eavesdrop.py --experiment=sweep --sweep=num_participants    #   fraction: Fig. 8, N_p: Fig. 9)
  python experiments/eavesdrop.py --experiment=whole                # Table V (20 trainings, middle/late stage)
  python experiments/eavesdrop.py --dataset=hapt --model=tinyhar --rounds=20     # HAR (HAPT windows)
  python experiments/eavesdrop.py --replicates=5                    # 5 federations (seeds 0-4) vmapped together

Each run writes rounds.csv, summary.csv and manifest.json under --output_dir/<run>/ and prints the paper-shaped
table. Runs checkpoint every round (state.msgpack; Whole Determination: after every training, trials_done.json)
and a rerun with the same flags resumes.
"""
import dataclasses
import os
import sys
import time

import numpy as np

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from jaxleak import data as D                                          # noqa: E402
from jaxleak import eavesdrop as EV                                    # noqa: E402
from jaxleak import models                                             # noqa: E402
from jaxleak.federated.rounds import LocalSGD                          # noqa: E402

FLAGS = flags.FLAGS
EXPERIMENTS = ("rounds", "compression", "dropout", "sweep", "whole")

flags.DEFINE_enum("experiment", "rounds", EXPERIMENTS, "rounds: Tables III-IV; compression: Table VI; dropout: the "
                  "dropout defence; sweep: Figs. 6-9 (--sweep); whole: Table V.")
flags.DEFINE_enum("dataset", "digits", list(D.POOL_DATASETS), "digits (sklearn 8x8, the MNIST stand-in) or HAR.")
flags.DEFINE_string("data_dir", None, "For wear/wetlab: the folder with raw/ and annotations/.")
flags.DEFINE_float("synthetic_scale", 1.0, "Length multiplier for synthetic HAR datasets.")
flags.DEFINE_enum("model", None, sorted(models.MODELS), "Model (default: mlp for digits, deepconvlstm for HAR).")
flags.DEFINE_float("dropout", None, "Dropout rate of the model (default: the model's own, 0.5; 0 removes it).")
flags.DEFINE_integer("num_participants", 100, "N_p.")
flags.DEFINE_float("fraction", 0.1, "P, the fraction of participants selected per round.")
flags.DEFINE_integer("rounds", 100, "Rounds to play (each attacked).")
flags.DEFINE_integer("local_epochs", 3, "L_ep.")
flags.DEFINE_integer("local_batch_size", 64, "L_bs.")
flags.DEFINE_float("local_lr", 0.01, "L_lr (plain SGD).")
flags.DEFINE_list("main_labels", ["3", "5"], "Range lo,hi of the number of main labels per participant.")
flags.DEFINE_integer("samples_per_label", 64, "Examples per main label (and the attacker's per label).")
flags.DEFINE_integer("other_samples", 8, "Examples of non-owned labels per participant.")
flags.DEFINE_float("compression", 0.0, "Top-CR upload compression: fraction of each layer's update dropped.")
flags.DEFINE_list("compression_rates", [str(c) for c in EV.PAPER_COMPRESSION], "--experiment=compression grid.")
flags.DEFINE_enum("sweep", "batch_size", list(EV.PAPER_SWEEPS), "--experiment=sweep parameter.")
flags.DEFINE_list("sweep_values", None, "Values for --sweep (default: the paper's ranges).")
flags.DEFINE_float("abort_std", 0.25, "Quantity Inference aborts when std(x_i) > abort_std * N_p * P.")
flags.DEFINE_float("ratio_threshold", 0.5, "Th_R of Algorithm 2.")
flags.DEFINE_float("sniff_margin", 0.5, "Class Sniffing: present when the update exceeds Th_low by this many "
                   "clients' contributions.")
flags.DEFINE_integer("wd_trials", 20, "Whole Determination: trainings (each with new random groups).")
flags.DEFINE_integer("wd_total", 2000, "Whole Determination: Q, examples of a most-frequent label in total.")
flags.DEFINE_list("wd_factors", ["1", "0.25", "0.2"], "Whole Determination: group sizes relative to Q.")
flags.DEFINE_integer("wd_max_rounds", 400, "Whole Determination: give up on a stage after this many rounds.")
flags.DEFINE_integer("wd_window", 5, "Whole Determination: rounds of ratios per label vector.")
flags.DEFINE_integer("seed", 0, "Seed (allocation, selection, initialisation, dropout).")
flags.DEFINE_integer("replicates", 1, "Independent federations per setting (seeds seed..seed+R-1), trained "
                     "together: one vmapped computation per round. Rates are pooled over all of them.")
flags.DEFINE_string("output_dir", "results/eavesdrop", "Where to write results.")


def base_config() -> EV.EavesdropConfig:
  model = FLAGS.model or ("mlp" if FLAGS.dataset == "digits" else "deepconvlstm")
  try:
    lo, hi = (int(v) for v in FLAGS.main_labels)
  except ValueError:
    raise app.UsageError(f"--main_labels must be two integers lo,hi; got {FLAGS.main_labels}.") from None
  return EV.EavesdropConfig(
      dataset=FLAGS.dataset, model=model, data_dir=FLAGS.data_dir, synthetic_scale=FLAGS.synthetic_scale,
      num_participants=FLAGS.num_participants, fraction=FLAGS.fraction, rounds=FLAGS.rounds,
      local=LocalSGD(FLAGS.local_epochs, FLAGS.local_batch_size, FLAGS.local_lr), main_labels=(lo, hi),
      samples_per_label=FLAGS.samples_per_label, other_samples=FLAGS.other_samples, compression=FLAGS.compression,
      dropout=FLAGS.dropout, sniff_margin=FLAGS.sniff_margin, ratio_threshold=FLAGS.ratio_threshold,
      abort_std=FLAGS.abort_std, seed=FLAGS.seed)


def run_one(cfg: EV.EavesdropConfig, name: str, pools=None) -> dict:
  """One setting: a single federation, or --replicates federations (seeds seed..seed+R-1) vmapped together,
  written to <run>/rep<r>/ each, with rates pooled over all replicates' rounds in <run>/."""
  out = os.path.join(FLAGS.output_dir, name)
  logging.info("run %s -> %s", name, out)
  checkpoint = os.path.join(out, "state.msgpack")
  if FLAGS.replicates == 1:
    res = EV.run_rounds(EV.setup(cfg, pools=pools), checkpoint_path=checkpoint, progress=logging.info)
    return EV.write_rounds(res, cfg, out)
  reps = EV.run_rounds_replicated(EV.setup_replicates(cfg, FLAGS.replicates), checkpoint_path=checkpoint,
                                  progress=logging.info)
  per_rep = [EV.write_rounds(r, dataclasses.replace(cfg, seed=cfg.seed + i), os.path.join(out, f"rep{i}"))
             for i, r in enumerate(reps)]
  spread = {k: [float(s["overall"][k]) for s in per_rep] for k in ("sniff", "qi_alpha1", "qi_alpha_pct", "qi_abort")}
  summary = EV.write_rounds(EV.pool_results(reps), cfg, out, extra={"replicates": FLAGS.replicates,
                                                                    "per_replicate_overall": spread})
  logging.info("over %d replicates (mean ± std): %s", FLAGS.replicates, ", ".join(
      f"{k} {100 * np.mean(v):.1f} ± {100 * np.std(v):.1f} %" for k, v in spread.items()))
  return summary


def _values(kind: str, raw, default):
  cast = int if kind in ("batch_size", "epochs", "num_participants") else float
  try:
    return [cast(v) for v in raw] if raw else list(default)
  except ValueError:
    raise app.UsageError(f"bad values {raw} for {kind}.") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  t0 = time.perf_counter()
  try:
    cfg = base_config()
    if FLAGS.experiment == "whole":
      wd = EV.WholeDeterminationConfig(trials=FLAGS.wd_trials, total_per_label=FLAGS.wd_total,
                                       factors=tuple(float(f) for f in FLAGS.wd_factors),
                                       max_rounds=FLAGS.wd_max_rounds, window=FLAGS.wd_window)
      out = os.path.join(FLAGS.output_dir, "whole")
      trials = EV.run_whole_determination(cfg, wd, progress=logging.info,
                                          checkpoint_path=os.path.join(out, "trials_done.json"))
      summary = EV.write_whole_determination(trials, cfg, wd, out)
      print(EV.whole_determination_table(summary, cfg, wd))
    elif FLAGS.experiment == "rounds":
      s = run_one(cfg, "rounds")
      print(EV.per_label_table(s, cfg))
    else:
      pools = EV.load_pools(cfg)
      if FLAGS.experiment == "compression":
        grid = [("CR", v, dataclasses.replace(cfg, compression=v))
                for v in _values("compression", FLAGS.compression_rates, EV.PAPER_COMPRESSION)]
        title = "Table VI: compression defence (Quantity Inference success among non-aborted rounds)"
      elif FLAGS.experiment == "dropout":
        grid = [("dropout", v, dataclasses.replace(cfg, dropout=v)) for v in (0.0, 0.5)]
        title = "Dropout defence"
      else:
        kind = FLAGS.sweep
        values = _values(kind, FLAGS.sweep_values, EV.PAPER_SWEEPS[kind])
        def point(v):
          if kind in ("batch_size", "epochs"):
            local = dataclasses.replace(cfg.local, **{kind: v})
            return dataclasses.replace(cfg, local=local)
          return dataclasses.replace(cfg, **{kind: v})
        grid = [(kind, v, point(v)) for v in values]
        title = {"batch_size": "Fig. 6", "epochs": "Fig. 7", "fraction": "Fig. 8",
                 "num_participants": "Fig. 9"}[kind] + f": Quantity Inference vs {kind}"
      points = [(n, v, run_one(c, f"{FLAGS.experiment}_{n}_{v:g}", pools)) for n, v, c in grid]
      print(EV.sweep_table(points, title + f" | {cfg.dataset} | {cfg.model} | {cfg.rounds} rounds | rates in %"))
  except (ValueError, FileNotFoundError, ImportError, FloatingPointError) as e:
    raise app.UsageError(str(e)) from None
  print(f"wall time {time.perf_counter() - t0:.1f} s; results in {FLAGS.output_dir}/")


if __name__ == "__main__":
  app.run(main)
