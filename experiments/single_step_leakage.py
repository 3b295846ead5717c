"""Single-step (FedSGD) label leakage: every client's updates, one gradient each, every attack.

  python experiments/single_step_leakage.py                      # HAPT, DeepConvLSTM, shuffle, the five attacks
  python experiments/single_step_leakage.py --dataset=synthetic_wear --model=tinyhar --sampling=sequential
  python experiments/single_step_leakage.py --flagfile=experiments/presets/har_reference.flags
  python experiments/single_step_leakage.py --noise=0.1 --clip=1.0            # one LDP setting
  python experiments/single_step_leakage.py --flagfile=experiments/presets/ldp_grid.flags   # none + the nine

Writes batches.csv, clients.csv, summary.csv and manifest.json to --output_dir (one folder, written whole) and
prints a table of mean and standard deviation over clients.
"""
import dataclasses
import time

from absl import flags

from jaxleak import cli, storage
from jaxleak.runs import leakage as L

FLAGS = flags.FlagValues()
cli.define_leakage_flags(FLAGS, multi_step=False)
flags.DEFINE_enum("grad_method", "fast", ["fast", "autodiff"], "Closed-form head gradient or full autodiff.",
                  flag_values=FLAGS)
flags.DEFINE_enum("clip_granularity", "batch", ["batch", "per_example"],
                  "Clip the batch gradient (the HAR code) or every example's gradient (DP-SGD).", flag_values=FLAGS)
flags.DEFINE_bool("ldp_grid", False, "Run no LDP plus the paper's nine (noise, clip) settings in one go (shares "
                  "the gradient pass); results go to --output_dir/<setting>/. Not with --noise/--clip.",
                  flag_values=FLAGS)


def main(argv):
  cli.no_positional(argv)
  if FLAGS.ldp_grid and (FLAGS["noise"].present or FLAGS["clip"].present):
    raise cli.FlagError("--ldp_grid runs no LDP plus the paper's nine (noise, clip) settings, so --noise/--clip "
                        "would be ignored: drop them, or drop --ldp_grid to run that one setting.")
  writer = cli.init_distributed(FLAGS, argv)
  cfg = cli.leakage_config(FLAGS, grad_method=FLAGS.grad_method)
  output_dir = cli.output_folder(FLAGS, replaced=True)
  if FLAGS.ldp_grid:
    settings = L.paper_ldp_settings(FLAGS.clip_scope, FLAGS.clip_granularity)
  else:
    settings = {"": L.ldp_setting(FLAGS.noise, FLAGS.clip, scope=FLAGS.clip_scope,
                                  granularity=FLAGS.clip_granularity)}
  t0 = time.perf_counter()
  resume = storage.resume_folder(output_dir)        # a killed run, run again, continues its gradient pass
  if FLAGS.ldp_grid:
    runs = L.run_ldp_sweep(cfg, settings, progress=cli.progress, resume_dir=resume)
  else:
    runs = {"": L.run_leakage(dataclasses.replace(cfg, ldp=settings[""]), progress=cli.progress, resume_dir=resume)}
  if writer:                                         # with --distributed, process 0 writes
    print(L.write_runs(runs, output_dir, time.perf_counter() - t0, FLAGS.flag_values_dict()))
    storage.delete_resume_folder(resume)


if __name__ == "__main__":
  cli.run(main, FLAGS)
