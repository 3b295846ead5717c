"""Flags and helpers shared by the leakage drivers (single and multi step)."""
import os
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from jaxleak import attacks as A                                       # noqa: E402
from jaxleak import data as D                                          # noqa: E402
from jaxleak import models, results                                    # noqa: E402
from jaxleak.leakage import SingleStepConfig                           # noqa: E402

FLAGS = flags.FLAGS


def define_common_flags(default_output: str, default_batch_size: int, default_minmax: bool):
  flags.DEFINE_enum("dataset", "hapt", list(D.DATASETS), "Dataset; wear/wetlab need --data_dir.")
  flags.DEFINE_string("data_dir", None, "Folder with raw/inertial/sbj_*.csv and annotations/loso_sbj_*.json.")
  flags.DEFINE_float("synthetic_scale", 1.0, "Length multiplier for synthetic datasets.")
  flags.DEFINE_enum("model", "deepconvlstm", sorted(models.MODELS), "Model architecture.")
  flags.DEFINE_bool("head_bias", True, "Build the classifier head with a bias (the paper's models have one).")
  flags.DEFINE_enum("sampling", "shuffle", list(D.STRATEGIES), "Batch sampling strategy.")
  flags.DEFINE_integer("batch_size", default_batch_size, "N, windows per update.")
  flags.DEFINE_list("attacks", list(A.HAR_PAPER_ATTACKS), f"Attacks, from: {', '.join(A.names())}.")
  flags.DEFINE_list("clients", None, "Subject ids to attack (default: all).")
  flags.DEFINE_integer("num_clients", None, "Attack only the first k subjects.")
  flags.DEFINE_integer("seed", 1, "Run seed (model init, sampling, dropout, attack randomness).")
  flags.DEFINE_bool("minmax", default_minmax, "Per-batch min-max input scaling.")
  flags.DEFINE_integer("chunk_size", 8, "Batches vmapped together (memory vs speed).")
  flags.DEFINE_float("noise", 0.0, "LDP: Gaussian noise std sigma (0 = none).")
  flags.DEFINE_float("clip", 0.0, "LDP: clip to L2 norm tau before the noise (0 = no clipping).")
  flags.DEFINE_enum("clip_scope", "all", ["all", "last_layer"],
                    "Norm over the whole model (the HAR code) or the classifier head only (the HAR paper's text).")
  flags.DEFINE_enum("model_state", "untrained", ["untrained", "trained"],
                    "Attack a fresh Xavier-normal init, or the trained LOSO fold models of --checkpoint_dir.")
  flags.DEFINE_string("checkpoint_dir", None, "Trained models from train_models.py (default: "
                      "checkpoints/<dataset>_<model>).")
  flags.DEFINE_string("output_dir", default_output, "Where to write the results.")


def _checkpoint_dir():
  if FLAGS.model_state == "untrained":
    if FLAGS.checkpoint_dir:
      raise app.UsageError("--checkpoint_dir is only used with --model_state=trained.")
    return None
  if FLAGS.checkpoint_dir:
    return FLAGS.checkpoint_dir
  return os.path.join("checkpoints", f"{FLAGS.dataset}_{FLAGS.model}")     # train_models.py's default


def base_config(**overrides) -> SingleStepConfig:
  return SingleStepConfig(checkpoint_dir=_checkpoint_dir(),
      dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, synthetic_scale=FLAGS.synthetic_scale, model=FLAGS.model,
      head_bias=FLAGS.head_bias, sampling=FLAGS.sampling, batch_size=FLAGS.batch_size, attacks=tuple(FLAGS.attacks),
      clients=None if FLAGS.clients is None else tuple(int(c) for c in FLAGS.clients),
      num_clients=FLAGS.num_clients, seed=FLAGS.seed, minmax=FLAGS.minmax, chunk_size=FLAGS.chunk_size,
      **overrides)


def run_and_write(run_fn):
  """Runs run_fn() -> {name: result}, writes each to --output_dir/<name>, prints the tables."""
  t0 = time.perf_counter()
  try:
    runs = run_fn()
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise app.UsageError(str(e).strip("'\"")) from None
  total = time.perf_counter() - t0
  for name, result in runs.items():
    result.timings["total_s"] = total
    results.write_single_step(result, os.path.join(FLAGS.output_dir, name), FLAGS.flag_values_dict())
    print(results.single_step_table(result) + "\n")
  print(f"wall time {total:.1f} s; results in {FLAGS.output_dir}/")


progress = logging.info
