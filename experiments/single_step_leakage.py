"""Single-step (FedSGD) label leakage: every client's batches, one gradient each, every attack.

  python experiments/single_step_leakage.py                      # HAPT, DeepConvLSTM, shuffle, the five attacks
  python experiments/single_step_leakage.py --dataset=synthetic_wear --model=tinyhar --sampling=sequential
  python experiments/single_step_leakage.py --flagfile=experiments/presets/har_reference.flags
  python experiments/single_step_leakage.py --noise=0.1 --clip=1.0            # one LDP setting
  python experiments/single_step_leakage.py --flagfile=experiments/presets/ldp_grid.flags   # none + the nine

Writes batches.csv, clients.csv, summary.csv and manifest.json to --output_dir and prints a table of mean and
standard deviation over clients.
"""
import dataclasses
import os
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from jaxleak import attacks as A                                       # noqa: E402
from jaxleak import data as D                                          # noqa: E402
from jaxleak import models, results                                    # noqa: E402
from jaxleak.leakage import (SingleStepConfig, ldp_setting, paper_ldp_settings, run_ldp_sweep,  # noqa: E402
                             run_single_step)

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "hapt", list(D.DATASETS), "Dataset; wear/wetlab need --data_dir.")
flags.DEFINE_string("data_dir", None, "Folder with raw/inertial/sbj_*.csv and annotations/loso_sbj_*.json.")
flags.DEFINE_float("synthetic_scale", 1.0, "Length multiplier for synthetic datasets.")
flags.DEFINE_enum("model", "deepconvlstm", sorted(models.MODELS), "Model architecture.")
flags.DEFINE_bool("head_bias", True, "Build the classifier head with a bias (the paper's models have one).")
flags.DEFINE_enum("sampling", "shuffle", list(D.STRATEGIES), "Batch sampling strategy.")
flags.DEFINE_integer("batch_size", 100, "N, windows per update.")
flags.DEFINE_list("attacks", list(A.HAR_PAPER_ATTACKS), f"Attacks, from: {', '.join(A.names())}.")
flags.DEFINE_list("clients", None, "Subject ids to attack (default: all).")
flags.DEFINE_integer("num_clients", None, "Attack only the first k subjects.")
flags.DEFINE_integer("seed", 1, "Run seed (model init, sampling, dropout, attack randomness).")
flags.DEFINE_enum("grad_method", "fast", ["fast", "autodiff"], "Closed-form head gradient or full autodiff.")
flags.DEFINE_bool("minmax", True, "Per-batch min-max input scaling (the reference's single-step setting).")
flags.DEFINE_integer("chunk_size", 8, "Batches vmapped together (memory vs speed).")
flags.DEFINE_float("noise", 0.0, "LDP: Gaussian noise std sigma added to the update (0 = none).")
flags.DEFINE_float("clip", 0.0, "LDP: clip the update to L2 norm tau before the noise (0 = no clipping).")
flags.DEFINE_enum("clip_scope", "all", ["all", "last_layer"],
                  "Norm over the whole model (the HAR code) or the classifier head only (the HAR paper's text).")
flags.DEFINE_enum("clip_granularity", "batch", ["batch", "per_example"],
                  "Clip the batch gradient (the HAR code) or every example's gradient (DP-SGD).")
flags.DEFINE_bool("ldp_grid", False, "Run no LDP plus the paper's nine (noise, clip) settings in one go (shares "
                  "the gradient pass); results go to --output_dir/<setting>/. Ignores --noise/--clip.")
flags.DEFINE_string("output_dir", "results/single_step", "Where to write the results.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = SingleStepConfig(
      dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, synthetic_scale=FLAGS.synthetic_scale, model=FLAGS.model,
      head_bias=FLAGS.head_bias, sampling=FLAGS.sampling, batch_size=FLAGS.batch_size, attacks=tuple(FLAGS.attacks),
      clients=None if FLAGS.clients is None else tuple(int(c) for c in FLAGS.clients),
      num_clients=FLAGS.num_clients, seed=FLAGS.seed, grad_method=FLAGS.grad_method, minmax=FLAGS.minmax,
      chunk_size=FLAGS.chunk_size)
  t0 = time.perf_counter()
  try:
    if FLAGS.ldp_grid:
      runs = run_ldp_sweep(cfg, paper_ldp_settings(FLAGS.clip_scope, FLAGS.clip_granularity),
                           progress=logging.info)
    else:
      cfg = dataclasses.replace(cfg, ldp=ldp_setting(FLAGS.noise, FLAGS.clip, scope=FLAGS.clip_scope,
                                                     granularity=FLAGS.clip_granularity))
      runs = {"": run_single_step(cfg, progress=logging.info)}
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise app.UsageError(str(e).strip("'\"")) from None
  total = time.perf_counter() - t0
  for name, result in runs.items():
    result.timings["total_s"] = total
    results.write_single_step(result, os.path.join(FLAGS.output_dir, name), FLAGS.flag_values_dict())
    print(results.single_step_table(result) + "\n")
  print(f"wall time {total:.1f} s; results in {FLAGS.output_dir}/")


if __name__ == "__main__":
  app.run(main)
