"""Do rare classes leak more when clients weight their loss by class? The HAR paper's open question, measured.

Runs the experiment (single step, or multi-step with --local_steps) twice per sampling, with the papers' mean
loss and with each client's loss weighted by its own label counts (`--client_loss=class_weighted`), on the same
updates' windows, and prints per attack: LnAcc, ClassAcc, and the existence recall of the rare and of the frequent
classes (over all updates that hold the class: the share in which the attack finds it). Rare: under --rare_share
of the data set's windows.

  python benchmarks/weighted_loss.py                                  # HAPT, untrained DeepConvLSTM
  python benchmarks/weighted_loss.py --model=tinyhar --samplings=shuffle --num_clients=5
  python benchmarks/weighted_loss.py --local_steps=5 --local_batch_size=20    # multi-step (FedAvg), N = 100

Then the weighted clients' counts again, read by an attacker who assumes the weights: each client's 'balanced'
weights taken as 1 / the data set's label shares (a public statistic), divided out (`attacks.unweight_counts`);
and, as a ceiling, with each client's own weights (which would give its label distribution away).
"""
import _flags
import jax
import numpy as np
from absl import flags

from jaxleak import metrics as M
from jaxleak.attacks import unweight_counts
from jaxleak.federated import LocalSteps
from jaxleak.runs.leakage import LeakageConfig, run_leakage
from jaxleak.runs.leakage.prepare import prepare

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


def client_means(r, pred: np.ndarray) -> tuple[float, float]:
  """LnAcc and ClassAcc of `pred` for the run's updates, as the summary computes them (mean over clients)."""
  cm = M.client_metrics(r.true_counts, pred, r.batch_client, len(r.subject_ids))
  return float(np.nanmean(cm.lnacc)), float(np.nanmean(cm.class_acc))


def main(_):
  rows, undone = [], []
  local = (LocalSteps(steps=FLAGS.local_steps, batch_size=FLAGS.local_batch_size, lr=FLAGS.local_lr)
           if FLAGS.local_steps else None)
  undo = jax.jit(jax.vmap(unweight_counts))
  for sampling in FLAGS.samplings:
    configs = {loss: LeakageConfig(dataset=FLAGS.dataset, model=FLAGS.model, sampling=sampling,
                                   num_clients=FLAGS.num_clients, client_loss=loss, local=local, minmax=local is None)
               for loss in ("mean", "class_weighted")}
    results = {loss: run_leakage(cfg) for loss, cfg in configs.items()}
    own = prepare(configs["class_weighted"], None, None, None).class_weights      # f32[K, C], each client's own
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
      # An attacker who assumes 'balanced' weights from the data set's label shares (w_c = 1 / share_c) divides
      # them out of the weighted clients' counts.
      r = results["class_weighted"]
      n = r.true_counts.sum(1).astype(np.int32)
      guess = np.where(share > 0, 1.0 / np.where(share > 0, share, 1.0), 0.0).astype(np.float32)
      pred = np.asarray(undo(r.pred_counts[attack], np.broadcast_to(guess, r.true_counts.shape), n))
      assert np.allclose(client_means(r, r.pred_counts[attack]), cells[1][:2]), "client_means != the summary"
      ln, ca = client_means(r, pred)
      recall = existence_recall(r.true_counts, pred)
      # The ceiling: an attacker who knows each client's own weights (its label distribution, the secret itself).
      oracle = client_means(r, np.asarray(undo(r.pred_counts[attack], own, n)))
      undone.append((sampling, attack, cells[0][:2], cells[1][:2], (ln, ca, np.nanmean(recall[rare])), oracle))
  steps = (f", multi-step B = {local.batch_size} S = {local.steps} lr = {local.lr:g}" if local else ", single step")
  print(f"{FLAGS.dataset}, untrained {FLAGS.model}, N = 100{steps}; mean loss -> class-weighted loss, in %; rare "
        f"classes: {int(rare.sum())} of {len(rare)} (under {FLAGS.rare_share:.0%} of the updates' windows)\n")
  print("| sampling | attack | LnAcc | ClassAcc | rare-class recall | frequent-class recall |")
  print("|---|---|---|---|---|---|")
  for sampling, attack, (mean, weighted) in rows:
    print(f"| {sampling} | {attack} | " + " | ".join(f"{100 * a:.1f} -> {100 * b:.1f}" for a, b in zip(mean, weighted))
          + " |")
  print("\nThe class-weighted clients' counts with the weights divided out (attacks.unweight_counts, weights "
        "1 / the data set's label shares): LnAcc and ClassAcc, mean loss | weighted | weighted, undone; rare-class "
        "recall undone\n")
  print("| sampling | attack | LnAcc | ClassAcc | rare-class recall, undone | LnAcc, ClassAcc with each client's own "
        "weights |")
  print("|---|---|---|---|---|---|")
  for sampling, attack, mean, weighted, fixed, oracle in undone:
    print(f"| {sampling} | {attack} | " + " | ".join(
        f"{100 * a:.1f} / {100 * b:.1f} / {100 * c:.1f}" for a, b, c in zip(mean, weighted, fixed[:2]))
          + f" | {100 * fixed[2]:.1f} | {100 * oracle[0]:.1f}, {100 * oracle[1]:.1f} |")


if __name__ == "__main__":
  _flags.run(main)
