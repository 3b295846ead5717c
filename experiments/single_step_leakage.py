"""Single-step (FedSGD) label leakage: every client's batches, one gradient each, every attack.

  python experiments/single_step_leakage.py                      # HAPT, DeepConvLSTM, shuffle, the five attacks
  python experiments/single_step_leakage.py --dataset=synthetic_wear --model=tinyhar --sampling=sequential
  python experiments/single_step_leakage.py --flagfile=experiments/presets/har_reference.flags

Writes batches.csv, clients.csv, summary.csv and manifest.json to --output_dir and prints a table of mean and
standard deviation over clients.
"""
import os
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from jaxleak import attacks as A                                       # noqa: E402
from jaxleak import data as D                                          # noqa: E402
from jaxleak import models, results                                    # noqa: E402
from jaxleak.leakage import SingleStepConfig, run_single_step          # noqa: E402

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
    result = run_single_step(cfg, progress=logging.info)
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise app.UsageError(str(e).strip("'\"")) from None
  result.timings["total_s"] = time.perf_counter() - t0
  paths = results.write_single_step(result, FLAGS.output_dir, FLAGS.flag_values_dict())
  print(results.single_step_table(result))
  print(f"\nwall time {result.timings['total_s']:.1f} s; results in {os.path.dirname(paths['summary.csv'])}/")


if __name__ == "__main__":
  app.run(main)
