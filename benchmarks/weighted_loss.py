"""Do rare classes leak more when clients weight their loss by class? The HAR paper's open question, measured.

Runs the experiment (single step, or multi-step with --local_steps) twice per sampling, with the papers' mean
loss and with each client's loss weighted by its own label counts (`--client_loss=class_weighted`), on the same
updates' windows, and prints per attack: LnAcc, ClassAcc, and the existence recall of the rare and of the frequent
classes (over all updates that hold the class: the share in which the attack finds it). Rare: under --rare_share
of the data set's windows.

  python benchmarks/weighted_loss.py                                  # HAPT, untrained DeepConvLSTM
  python benchmarks/weighted_loss.py --model=tinyhar --samplings=shuffle --num_clients=5
  python benchmarks/weighted_loss.py --local_steps=5 --local_batch_size=20    # multi-step (FedAvg), N = 100
"""
import _flags
import numpy as np
from absl import flags

from jaxleak.federated import LocalSteps
from jaxleak.runs.leakage import LeakageConfig, run_leakage

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "hapt", "HAR dataset.")
flags.DEFINE_string("model", "deepconvlstm", "Model (untrained).")
flags.DEFINE_list("samplings", ["shuffle", "sequential"], "Samplings to compare.")
flags.DEFINE_integer("num_clients", None, "Attack only the first k subjects.", lower_bound=1)
flags.DEFINE_integer("local_steps", 0, "S local SGD steps per update (0: single step).", lower_bound=0)
flags.DEFINE_integer("local_batch_size", 20, "B windows per local step (with --local_steps).", lower_bound=1)
flags.DEFINE_float("local_lr", 1e-4, "Local learning rate (with --local_steps).", lower_bound=0.0)
flags.DEFINE_float("rare_share", 0.05, "A class is rare below this share of the data set's windows.",
                   lower_bound=0.0, upper_bound=1.0)


def existence_recall(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """Per class: of the updates holding it, the share whose predicted count is positive (NaN if none holds it)."""
  held = true > 0
  return np.sum(held & (pred > 0), axis=0) / np.where(held.sum(0) > 0, held.sum(0), np.nan)


def main(_):
  rows = []
  local = (LocalSteps(steps=FLAGS.local_steps, batch_size=FLAGS.local_batch_size, lr=FLAGS.local_lr)
           if FLAGS.local_steps else None)
  for sampling in FLAGS.samplings:
    results = {loss: run_leakage(LeakageConfig(dataset=FLAGS.dataset, model=FLAGS.model, sampling=sampling,
                                               num_clients=FLAGS.num_clients, client_loss=loss, local=local,
                                               minmax=local is None))
               for loss in ("mean", "class_weighted")}
    share = np.sum(results["mean"].true_counts, axis=0) / np.sum(results["mean"].true_counts)
    rare = share < FLAGS.rare_share
    for attack in results["mean"].config.attacks:
      cells = []
      for loss, r in results.items():
        summary = next(s for s in r.summary_rows() if s["attack"] == attack)
        recall = existence_recall(r.true_counts, r.pred_counts[attack])
        cells.append((summary["lnacc"][0], summary["class_acc"][0], np.nanmean(recall[rare]),
                      np.nanmean(recall[~rare])))
      rows.append((sampling, attack, cells))
  steps = (f", multi-step B = {local.batch_size} S = {local.steps} lr = {local.lr:g}" if local else ", single step")
  print(f"{FLAGS.dataset}, untrained {FLAGS.model}, N = 100{steps}; mean loss -> class-weighted loss, in %; rare "
        f"classes: {int(rare.sum())} of {len(rare)} (under {FLAGS.rare_share:.0%} of the updates' windows)\n")
  print("| sampling | attack | LnAcc | ClassAcc | rare-class recall | frequent-class recall |")
  print("|---|---|---|---|---|---|")
  for sampling, attack, (mean, weighted) in rows:
    print(f"| {sampling} | {attack} | " + " | ".join(f"{100 * a:.1f} -> {100 * b:.1f}" for a, b in zip(mean, weighted))
          + " |")


if __name__ == "__main__":
  _flags.run(main)
