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

from absl import app, flags

import common
from common import FLAGS
from jaxleak.leakage import ldp_setting, paper_ldp_settings, run_ldp_sweep, run_single_step

common.define_common_flags("results/single_step", default_batch_size=100, default_minmax=True)
flags.DEFINE_enum("grad_method", "fast", ["fast", "autodiff"], "Closed-form head gradient or full autodiff.")
flags.DEFINE_enum("clip_granularity", "batch", ["batch", "per_example"],
                  "Clip the batch gradient (the HAR code) or every example's gradient (DP-SGD).")
flags.DEFINE_bool("ldp_grid", False, "Run no LDP plus the paper's nine (noise, clip) settings in one go (shares "
                  "the gradient pass); results go to --output_dir/<setting>/. Ignores --noise/--clip.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = common.base_config(grad_method=FLAGS.grad_method)

  def run():
    if FLAGS.ldp_grid:
      return run_ldp_sweep(cfg, paper_ldp_settings(FLAGS.clip_scope, FLAGS.clip_granularity),
                           progress=common.progress)
    ldp = ldp_setting(FLAGS.noise, FLAGS.clip, scope=FLAGS.clip_scope, granularity=FLAGS.clip_granularity)
    return {"": run_single_step(dataclasses.replace(cfg, ldp=ldp), progress=common.progress)}

  common.run_and_write(run)


if __name__ == "__main__":
  app.run(main)
