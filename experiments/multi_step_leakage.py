"""Multi-step (FedAvg) label leakage: each client update of N windows is S local SGD steps of B windows.

  python experiments/multi_step_leakage.py                                   # HAPT, N=500, B=100, S=5
  python experiments/multi_step_leakage.py --num_samples=100 --local_batch_size=20 --local_steps=5
  python experiments/multi_step_leakage.py --equivalent=sum                  # what the HAR code hands its attacks

--num_samples is N (the reference's --num_data_points); --local_batch_size is B. Same outputs as the single-step
driver.
"""
import time

from absl import flags

from jaxleak import cli, storage
from jaxleak.federated import EQUIVALENTS, LocalSteps
from jaxleak.runs import leakage as L

FLAGS = flags.FlagValues()
cli.define_leakage_flags(FLAGS, multi_step=True)
flags.DEFINE_integer("local_batch_size", 100, "B, windows per local SGD step (B <= N).", flag_values=FLAGS)
flags.DEFINE_integer("local_steps", 5, "S, local SGD steps.", flag_values=FLAGS)
flags.DEFINE_float("local_lr", 1e-4, "Local SGD learning rate eta (> 0).", flag_values=FLAGS)
flags.DEFINE_enum("equivalent", "mean", list(EQUIVALENTS),
                  "Gradient-equivalent of the update: mean over steps (default) or the reference's sum.",
                  flag_values=FLAGS)
flags.DEFINE_bool("via_parameter_delta", False,
                  "Form theta_S - theta_0 in float32 and divide by eta, as the reference (with its quantisation).",
                  flag_values=FLAGS)


def main(argv):
  cli.no_positional(argv)
  writer = cli.init_distributed(FLAGS, argv)
  cli.positive_int(FLAGS, "local_batch_size")
  cli.positive_int(FLAGS, "local_steps")
  cli.finite(FLAGS, "local_lr", 0.0, lo_open=True)
  cli.finite(FLAGS, "noise", 0.0)
  cli.finite(FLAGS, "clip", 0.0)
  local = LocalSteps(steps=FLAGS.local_steps, batch_size=FLAGS.local_batch_size, lr=FLAGS.local_lr,
                     equivalent=FLAGS.equivalent, via_parameter_delta=FLAGS.via_parameter_delta,
                     ldp=L.ldp_setting(FLAGS.noise, FLAGS.clip, scope=FLAGS.clip_scope))
  cfg = cli.leakage_config(FLAGS, local=local)
  output_dir = cli.output_folder(FLAGS, replaced=True)
  t0 = time.perf_counter()
  resume = storage.resume_folder(output_dir)        # a killed run, run again, continues its local training
  runs = {"": L.run_leakage(cfg, progress=cli.progress, resume_dir=resume)}
  if writer:                                         # with --distributed, process 0 writes
    print(L.write_runs(runs, output_dir, time.perf_counter() - t0, FLAGS.flag_values_dict()))
    storage.delete_resume_folder(resume)


if __name__ == "__main__":
  cli.run(main, FLAGS)
