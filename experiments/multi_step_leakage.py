"""Multi-step (FedAvg) label leakage: each query of N windows is trained S local SGD steps of B windows.

  python experiments/multi_step_leakage.py                                   # HAPT, N=500, B=100, S=5
  python experiments/multi_step_leakage.py --batch_size=100 --data_per_step=20 --local_steps=5
  python experiments/multi_step_leakage.py --equivalent=sum                  # what the HAR code hands its attacks

--batch_size is N (the reference's --num_data_points). Same outputs as the single-step driver.
"""
from absl import app, flags

import common
from common import FLAGS
from jaxleak.federated import EQUIVALENTS, LocalTraining
from jaxleak.leakage import ldp_setting, run_single_step

common.define_common_flags("results/multi_step", default_batch_size=500, default_minmax=False)
flags.DEFINE_integer("data_per_step", 100, "B, windows per local SGD step.")
flags.DEFINE_integer("local_steps", 5, "S, local SGD steps.")
flags.DEFINE_float("local_lr", 1e-4, "Local SGD learning rate eta.")
flags.DEFINE_enum("equivalent", "mean", list(EQUIVALENTS),
                  "Gradient-equivalent of the update: mean over steps (default) or the reference's sum.")
flags.DEFINE_bool("via_parameter_delta", False,
                  "Form theta_S - theta_0 in float32 and divide by eta, as the reference (with its quantisation).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")

  def run():
    local = LocalTraining(steps=FLAGS.local_steps, batch_size=FLAGS.data_per_step, lr=FLAGS.local_lr,
                          equivalent=FLAGS.equivalent, via_parameter_delta=FLAGS.via_parameter_delta,
                          ldp=ldp_setting(FLAGS.noise, FLAGS.clip, scope=FLAGS.clip_scope))
    return {"": run_single_step(common.base_config(local=local), progress=common.progress)}

  common.run_and_write(run)


if __name__ == "__main__":
  app.run(main)
