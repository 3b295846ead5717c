"""The Eavesdrop paper's attacks against FedAvg with secure aggregation (Class Sniffing, Quantity Inference,
Whole Determination) and its defences.

  python experiments/eavesdrop.py                                   # Tables III+IV: MNIST, MLP, 100 rounds
  python experiments/eavesdrop.py --model=cnn
  python experiments/eavesdrop.py --experiment=compression          # Table VI (top-CR upload compression)
  python experiments/eavesdrop.py --experiment=dropout              # dropout defence: with vs without
  python experiments/eavesdrop.py --experiment=sweep --sweep=batch_size          # Fig. 6 (also epochs: Fig. 7,
  python experiments/eavesdrop.py --experiment=sweep --sweep=num_participants    #   fraction: Fig. 8, N_p: Fig. 9)
  python experiments/eavesdrop.py --experiment=whole                # Table V (20 trainings, middle/late stage)
  python experiments/eavesdrop.py --dataset=hapt --model=tinyhar --rounds=20     # HAR (HAPT windows)
  python experiments/eavesdrop.py --replicates=5                    # 5 federations (seeds 0-4) vmapped together

Each run writes rounds.csv, summary.csv and manifest.json to --output_dir/<run>/ (one folder, written whole) and
prints the paper-shaped table. Runs checkpoint every round to --output_dir/checkpoints/<run>.ckpt (Whole
Determination: after every training) and a rerun with the same flags resumes.
"""
import dataclasses
import os
import time

import numpy as np
from absl import flags

from jaxleak import cli
from jaxleak import data as D
from jaxleak import models, storage
from jaxleak.federated import CLIENT_LOSSES, LocalEpochs
from jaxleak.runs import eavesdrop as EV
from jaxleak.runs import fields

FLAGS = flags.FlagValues()
_d = dict(flag_values=FLAGS)
EXPERIMENTS = ("rounds", "compression", "dropout", "sweep", "whole")
IMAGE_DATASETS = ("digits", "mnist")

flags.DEFINE_enum("experiment", "rounds", EXPERIMENTS, "rounds: Tables III-IV; compression: Table VI; dropout: the "
                  "dropout defence; sweep: Figs. 6-9 (--sweep); whole: Table V.", **_d)
flags.DEFINE_enum("dataset", "mnist", list(D.POOL_DATASETS), "mnist (5,000 real 28x28 MNIST digits, extra mnist; "
                  "the default), digits (sklearn 8x8, extra digits) or HAR.", **_d)
flags.DEFINE_string("data_dir", None, "For wear/wetlab/tal: the folder with raw/ and annotations/.", **_d)
flags.DEFINE_float("synthetic_scale", 1.0, "Length multiplier for synthetic HAR datasets (> 0).", **_d)
flags.DEFINE_enum("model", None, list(models.names()),
                  "Model (default: mlp for digits and mnist, deepconvlstm for HAR).", **_d)
flags.DEFINE_float("dropout", None, "Dropout rate of the model in [0, 1) (default: the model's own, 0.5; 0 removes "
                   "it).", **_d)
flags.DEFINE_integer("num_participants", 100, "N_p.", **_d)
flags.DEFINE_float("fraction", 0.1, "P in (0, 1], the fraction of participants selected per round.", **_d)
flags.DEFINE_integer("rounds", 100, "Rounds to play (each attacked).", **_d)
flags.DEFINE_integer("local_epochs", 3, "L_ep.", **_d)
flags.DEFINE_integer("local_batch_size", 64, "L_bs.", **_d)
flags.DEFINE_float("local_lr", 0.01, "L_lr (plain SGD, > 0).", **_d)
flags.DEFINE_enum("client_loss", "mean", list(CLIENT_LOSSES), "The participants' loss in every local step: the "
                  "paper's mean CE, or class-weighted by each participant's own label counts (sklearn 'balanced', "
                  "PyTorch's CrossEntropyLoss(weight=)); beyond the paper.", **_d)
flags.DEFINE_enum("partition", "main_labels", list(EV.PARTITIONS), "main_labels: the paper's sec. IV-B "
                  "(--main_labels, --samples_per_label, --other_samples); dirichlet: label proportions ~ "
                  "Dir(--dirichlet_alpha), --samples_per_participant each.", **_d)
flags.DEFINE_float("dirichlet_alpha", 0.5, "partition=dirichlet: concentration (> 0; small = few labels each).", **_d)
flags.DEFINE_integer("samples_per_participant", 256, "partition=dirichlet: examples per participant.", **_d)
flags.DEFINE_integer("min_owned", 16, "partition=dirichlet: examples of a label that make a participant own it "
                     "(the attacks' ground truth).", **_d)
flags.DEFINE_list("main_labels", ["3", "5"], "Range lo,hi of the number of main labels per participant.", **_d)
flags.DEFINE_integer("samples_per_label", 64, "Examples per main label (and the attacker's per label).", **_d)
flags.DEFINE_integer("other_samples", 8, "Examples of non-owned labels per participant.", **_d)
flags.DEFINE_float("compression", 0.0, "Top-CR upload compression in [0, 1): fraction of each layer's update "
                   "dropped.", **_d)
flags.DEFINE_float("ldp_noise", 0.0, "Participants' LDP: Gaussian noise std added to every entry of the update "
                   "(>= 0; 0 = none).", **_d)
flags.DEFINE_float("ldp_clip", 0.0, "Participants' LDP: clip the whole update to this L2 norm before the noise "
                   "(>= 0; 0 = no clipping).", **_d)
flags.DEFINE_list("compression_rates", [str(c) for c in EV.PAPER_COMPRESSION], "--experiment=compression grid.", **_d)
flags.DEFINE_enum("sweep", "batch_size", list(EV.PAPER_SWEEPS), "--experiment=sweep parameter.", **_d)
flags.DEFINE_list("sweep_values", None, "Values for --sweep (default: the paper's ranges).", **_d)
flags.DEFINE_float("abort_std", 0.25, "Quantity Inference aborts when std(x_i) > abort_std * N_p * P.", **_d)
flags.DEFINE_float("ratio_threshold", 0.5, "Th_R of Algorithm 2.", **_d)
flags.DEFINE_float("sniff_margin", 0.5, "Class Sniffing: present when the update exceeds Th_low by this many "
                   "clients' contributions.", **_d)
flags.DEFINE_integer("wd_trials", 20, "Whole Determination: trainings (each with new random groups).", **_d)
flags.DEFINE_integer("wd_total", 2000, "Whole Determination: Q, examples of a most-frequent label in total.", **_d)
flags.DEFINE_list("wd_factors", ["1", "0.25", "0.2"], "Whole Determination: group sizes relative to Q.", **_d)
flags.DEFINE_integer("wd_max_rounds", 400, "Whole Determination: give up on a stage after this many rounds.", **_d)
flags.DEFINE_integer("wd_window", 5, "Whole Determination: rounds of ratios per label vector.", **_d)
flags.DEFINE_list("wd_stages", ["0.5", "0.85"], "Whole Determination: test accuracies at which to attack, increasing "
                  "(the paper's middle and late stages).", **_d)
flags.DEFINE_bool("attacker_participates", False, "The attacker is participant 0: selected like any other, it "
                  "then removes its own update before attacking (the paper, sec. III-A); reports both ways.", **_d)
flags.DEFINE_integer("seed", 0, "Seed (allocation, selection, initialisation, dropout).", **_d)
flags.DEFINE_integer("replicates", 1, "Independent federations per setting (seeds seed..seed+R-1 for allocation, "
                     "model, selections; one shared pool split), trained together: one vmapped computation per "
                     "round. Rates are pooled over all of them.", **_d)
flags.DEFINE_string("output_dir", "results/eavesdrop", "Where to write results.", **_d)


#: Flags that only some experiments or partitions read: flag -> (who reads it, whether this command line does).
_WD = lambda: FLAGS.experiment == "whole"
_PARTITIONED = lambda part: lambda: FLAGS.partition == part and FLAGS.experiment != "whole"
READ_ONLY_WITH = {
    "compression_rates": ("--experiment=compression", lambda: FLAGS.experiment == "compression"),
    "sweep": ("--experiment=sweep", lambda: FLAGS.experiment == "sweep"),
    "sweep_values": ("--experiment=sweep", lambda: FLAGS.experiment == "sweep"),
    **{f"wd_{n}": ("--experiment=whole", _WD) for n in ("trials", "total", "factors", "max_rounds", "window",
                                                        "stages")},
    "rounds": ("the experiments that play a fixed number of rounds (not whole: --wd_max_rounds)",
               lambda: not _WD()),
    "partition": ("the experiments other than whole (its groups set the allocation)", lambda: not _WD()),
    **{n: ("the experiments other than whole (it reads the per-label ratios, not Class Sniffing or Quantity "
           "Inference; --wd_trials are its replicates)", lambda: not _WD())
       for n in ("sniff_margin", "ratio_threshold", "abort_std", "attacker_participates", "replicates")},
    **{n: ("--partition=dirichlet (not with --experiment=whole)", _PARTITIONED("dirichlet"))
       for n in ("dirichlet_alpha", "samples_per_participant", "min_owned")},
    **{n: ("--partition=main_labels (not with --experiment=whole)", _PARTITIONED("main_labels"))
       for n in ("main_labels", "other_samples")},
    "compression": ("the experiments other than compression (--compression_rates sets it there)",
                    lambda: FLAGS.experiment != "compression"),
    "dropout": ("the experiments other than dropout (it runs 0 and 0.5)", lambda: FLAGS.experiment != "dropout"),
}
#: --sweep=<kind> sets this flag at every point of the sweep.
SWEPT_FLAG = {"batch_size": "local_batch_size", "epochs": "local_epochs", "fraction": "fraction",
              "num_participants": "num_participants"}


def refuse_unread_flags() -> None:
  """A flag given on the command line that this experiment would not read is refused, naming who reads it:
  otherwise the run would go ahead without the setting the user asked for."""
  for name, (reader, read) in READ_ONLY_WITH.items():
    if FLAGS[name].present and not read():
      raise cli.FlagError(f"--{name} is read only with {reader}; this command line would ignore it. Drop it, or "
                          "choose the experiment or partition that uses it.")
  if FLAGS.experiment == "sweep" and FLAGS[SWEPT_FLAG[FLAGS.sweep]].present:
    raise cli.FlagError(f"--{SWEPT_FLAG[FLAGS.sweep]} is what --sweep={FLAGS.sweep} varies (--sweep_values); "
                        "drop it, or sweep another parameter.")


def validate_flags() -> None:
  """Every numeric flag in its range, and no flag this experiment would ignore, before any data is read."""
  refuse_unread_flags()
  for name in ("num_participants", "rounds", "local_epochs", "local_batch_size", "samples_per_label", "replicates",
               "wd_trials", "wd_total", "wd_max_rounds", "wd_window", "samples_per_participant", "min_owned"):
    cli.positive_int(FLAGS, name)
  cli.check(FLAGS, "other_samples", FLAGS.other_samples >= 0, "an integer >= 0")
  cli.check_data_flags(FLAGS)
  cli.finite(FLAGS, "fraction", 0.0, 1.0, lo_open=True)
  cli.finite(FLAGS, "local_lr", 0.0, lo_open=True)
  cli.finite(FLAGS, "dirichlet_alpha", 0.0, lo_open=True)
  cli.finite(FLAGS, "ldp_noise", 0.0)
  cli.finite(FLAGS, "ldp_clip", 0.0)
  cli.finite(FLAGS, "compression", 0.0, 1.0, hi_open=True)
  cli.finite(FLAGS, "abort_std", 0.0, lo_open=True)
  cli.finite(FLAGS, "ratio_threshold", 0.0, lo_open=True)
  cli.finite(FLAGS, "sniff_margin", 0.0)
  fields.seed("--seed", FLAGS.seed, span=FLAGS.replicates)  # replicate r plays seed + r: all below 2**32
  if FLAGS.dropout is not None:
    cli.finite(FLAGS, "dropout", 0.0, 1.0, hi_open=True)
  stages = cli.float_list(FLAGS, "wd_stages")
  cli.check(FLAGS, "wd_stages", all(0 < s <= 1 for s in stages) and list(stages) == sorted(stages),
            "increasing test accuracies in (0, 1]")


def base_config() -> EV.EavesdropConfig:
  validate_flags()
  model = FLAGS.model or ("mlp" if FLAGS.dataset in IMAGE_DATASETS else "deepconvlstm")
  models.require(model, "eavesdrop")
  lo_hi = cli.int_list(FLAGS, "main_labels", unique=False)
  cli.check(FLAGS, "main_labels", len(lo_hi) == 2 and 1 <= lo_hi[0] <= lo_hi[1], "two integers 1 <= lo <= hi")
  return EV.EavesdropConfig(
      dataset=FLAGS.dataset, model=model, data_dir=FLAGS.data_dir, synthetic_scale=FLAGS.synthetic_scale,
      num_participants=FLAGS.num_participants, fraction=FLAGS.fraction, rounds=FLAGS.rounds,
      local=LocalEpochs(FLAGS.local_epochs, FLAGS.local_batch_size, FLAGS.local_lr, FLAGS.client_loss),
      main_labels=tuple(lo_hi),
      samples_per_label=FLAGS.samples_per_label, other_samples=FLAGS.other_samples, compression=FLAGS.compression,
      dropout=FLAGS.dropout, sniff_margin=FLAGS.sniff_margin, ratio_threshold=FLAGS.ratio_threshold,
      abort_std=FLAGS.abort_std, partition=FLAGS.partition, dirichlet_alpha=FLAGS.dirichlet_alpha,
      samples_per_participant=FLAGS.samples_per_participant, min_owned=FLAGS.min_owned, ldp_noise=FLAGS.ldp_noise,
      ldp_clip=FLAGS.ldp_clip,
      attacker_participates=FLAGS.attacker_participates, seed=FLAGS.seed)


def run_one(cfg: EV.EavesdropConfig, name: str, pools=None) -> dict:
  """One setting: a single federation, or --replicates federations (seeds seed..seed+R-1) vmapped together,
  written to <run>/rep<r>/ each, with rates pooled over all replicates' rounds in <run>/ (one folder commit)."""
  out = os.path.join(FLAGS.output_dir, name)
  cli.progress(f"run {name} -> {out}")
  checkpoint = os.path.join(FLAGS.output_dir, "checkpoints", name + ".ckpt")
  if FLAGS.replicates == 1:
    res = EV.run_rounds(EV.setup(cfg, pools=pools), checkpoint_path=checkpoint, progress=cli.progress)
    return EV.write_rounds(res, cfg, out)
  reps = EV.run_rounds_replicated(EV.setup_replicates(cfg, FLAGS.replicates), checkpoint_path=checkpoint,
                                  progress=cli.progress)
  files, per_rep = {}, []
  for i, r in enumerate(reps):
    rep_files, s = EV.rounds_files(r, dataclasses.replace(cfg, seed=cfg.seed + i))
    files.update({f"rep{i}/{k}": v for k, v in rep_files.items()})
    per_rep.append(s)
  spread = {k: [float(s["overall"][k]) for s in per_rep] for k in ("sniff", "qi_alpha1", "qi_alpha_pct", "qi_abort")}
  pooled, summary = EV.rounds_files(EV.pool_results(reps), cfg, extra={"replicates": FLAGS.replicates,
                                                                       "per_replicate_overall": spread})
  storage.commit_folder(out, {**files, **pooled})
  cli.progress(f"over {FLAGS.replicates} replicates (mean ± std): " + ", ".join(
      f"{k} {100 * np.mean(v):.1f} ± {100 * np.std(v):.1f} %" for k, v in spread.items()))
  return summary


def _grid(cfg: EV.EavesdropConfig):
  """(name, value, config) of every point of --experiment=compression|dropout|sweep, and the table's title."""
  if FLAGS.experiment == "compression":
    values = cli.float_list(FLAGS, "compression_rates")
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if bad:
      raise cli.FlagError(f"--compression_rates: {bad} outside [0, 1).")
    return ([("CR", v, dataclasses.replace(cfg, compression=v)) for v in values],
            "Table VI: compression defence (Quantity Inference success among non-aborted rounds)")
  if FLAGS.experiment == "dropout":
    return [("dropout", v, dataclasses.replace(cfg, dropout=v)) for v in (0.0, 0.5)], "Dropout defence"
  kind = FLAGS.sweep
  if FLAGS.sweep_values is None:
    values = list(EV.PAPER_SWEEPS[kind])
  elif kind in ("batch_size", "epochs", "num_participants"):
    values = list(cli.int_list(FLAGS, "sweep_values"))
    if min(values) <= 0:
      raise cli.FlagError(f"--sweep_values: {kind} values must be positive integers, got {values}.")
  else:
    values = list(cli.float_list(FLAGS, "sweep_values"))
    if not all(0.0 < v <= 1.0 for v in values):
      raise cli.FlagError(f"--sweep_values: fractions must be in (0, 1], got {values}.")

  def point(v):
    if kind in ("batch_size", "epochs"):
      return dataclasses.replace(cfg, local=dataclasses.replace(cfg.local, **{kind: v}))
    return dataclasses.replace(cfg, **{kind: v})

  title = {"batch_size": "Fig. 6", "epochs": "Fig. 7", "fraction": "Fig. 8",
           "num_participants": "Fig. 9"}[kind] + f": Quantity Inference vs {kind}"
  return [(kind, v, point(v)) for v in values], title


def main(argv):
  cli.no_positional(argv)
  cfg = base_config()
  cli.output_folder(FLAGS)
  grid, title = _grid(cfg) if FLAGS.experiment not in ("whole", "rounds") else ([], "")
  for name in [FLAGS.experiment] + [f"{FLAGS.experiment}_{n}_{v:g}" for n, v, _ in grid]:
    try:                                          # each run's folder is written whole: refuse before any work
      storage.check_replaceable_folder(os.path.join(FLAGS.output_dir, name), "--output_dir")
    except storage.StorageError as e:
      raise cli.FlagError(str(e)) from None
  t0 = time.perf_counter()
  if FLAGS.experiment == "whole":
    factors = cli.float_list(FLAGS, "wd_factors")
    cli.check(FLAGS, "wd_factors", all(0 < f <= 1 for f in factors) and len(factors) >= 2,
              "at least two group sizes in (0, 1] relative to Q")
    stages = cli.float_list(FLAGS, "wd_stages")
    wd = EV.WholeDeterminationConfig(trials=FLAGS.wd_trials, total_per_label=FLAGS.wd_total, factors=factors,
                                     max_rounds=FLAGS.wd_max_rounds, window=FLAGS.wd_window, stages=tuple(stages))
    trials = EV.run_whole_determination(cfg, wd, progress=cli.progress,
                                        checkpoint_path=os.path.join(FLAGS.output_dir, "checkpoints", "whole.ckpt"))
    summary = EV.write_whole_determination(trials, cfg, wd, os.path.join(FLAGS.output_dir, "whole"))
    print(EV.whole_determination_table(summary, cfg, wd))
  elif FLAGS.experiment == "rounds":
    s = run_one(cfg, "rounds")
    print(EV.per_label_table(s, cfg))
  else:
    pools = EV.load_pools(cfg)
    points = [(n, v, run_one(c, f"{FLAGS.experiment}_{n}_{v:g}", pools)) for n, v, c in grid]
    print(EV.sweep_table(points, title + f" | {cfg.dataset} | {cfg.model} | {cfg.rounds} rounds | rates in %"))
  print(f"wall time {time.perf_counter() - t0:.1f} s; results in {FLAGS.output_dir}/")


if __name__ == "__main__":
  cli.run(main, FLAGS)
