"""Trains the global model of every leave-one-subject-out fold (spec 7.4), all folds vmapped in one step.

  python experiments/train_models.py --dataset=hapt --model=tinyhar --epochs=5
  python experiments/single_step_leakage.py --model=tinyhar --model_state=trained    # attack the trained folds

Checkpoints (flax msgpack + JSON) go to --checkpoint_dir (default checkpoints/<dataset>_<model>) after every
epoch; rerunning the same command resumes a killed run. Prints each fold's held-out accuracy and macro F1.
"""
import os

import numpy as np
from absl import app, flags, logging

import common  # noqa: F401  (sys.path for running from a checkout)
from jaxleak import data as D
from jaxleak import models, results
from jaxleak.federated.training import Folds, TrainConfig, checkpoint_path, train_folds  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "hapt", list(D.DATASETS), "Dataset; wear/wetlab need --data_dir.")
flags.DEFINE_string("data_dir", None, "Folder with raw/inertial/sbj_*.csv and annotations/loso_sbj_*.json.")
flags.DEFINE_float("synthetic_scale", 1.0, "Length multiplier for synthetic datasets.")
flags.DEFINE_enum("model", "deepconvlstm", sorted(models.MODELS), "Model architecture.")
flags.DEFINE_bool("head_bias", True, "Build the classifier head with a bias.")
flags.DEFINE_integer("epochs", 100, "Epochs (the reference: 100).")
flags.DEFINE_integer("batch_size", 100, "Training batch size.")
flags.DEFINE_float("lr", 1e-4, "Adam learning rate (decayed x0.9 every 10 epochs).")
flags.DEFINE_float("weight_decay", 1e-6, "L2 weight decay added to the gradient.")
flags.DEFINE_bool("class_weighted", True, "Class-balanced cross-entropy weights.")
flags.DEFINE_list("folds", None, "Held-out subject ids to train (default: every LOSO split).")
flags.DEFINE_integer("seed", 1, "Seed (init, shuffling, dropout).")
flags.DEFINE_string("checkpoint_dir", None, "Default: checkpoints/<dataset>_<model>.")
flags.DEFINE_enum("fold_execution", "auto", ["auto", "vmap", "sequential"],
                  "All folds in one vmapped step, or one compiled step per fold ('auto': sequential on CPU, where "
                  "vmapped convolutions over folds are slower; vmap on accelerators).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    ds = D.load(FLAGS.dataset, data_dir=FLAGS.data_dir, scale=FLAGS.synthetic_scale, seed=FLAGS.seed)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  clients = D.make_clients(ds)
  held = [s for s, _ in ds.loso_splits()]
  if FLAGS.folds is not None:
    wanted = [int(s) for s in FLAGS.folds]
    unknown = [s for s in wanted if s not in held]
    if unknown:
      raise app.UsageError(f"--folds: {unknown} are not LOSO held-out subjects of {ds.name}: {held}")
    held = wanted
  folds = Folds(tuple(clients.subject_ids.index(s) for s in held))
  cfg = TrainConfig(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, lr=FLAGS.lr, weight_decay=FLAGS.weight_decay,
                    class_weighted=FLAGS.class_weighted, seed=FLAGS.seed)
  ckpt_dir = FLAGS.checkpoint_dir or os.path.join("checkpoints", f"{ds.name}_{FLAGS.model}")
  model = models.build(FLAGS.model, ds.num_classes, head_bias=FLAGS.head_bias)
  logging.info("training %d folds of %s on %s for %d epochs -> %s", len(held), FLAGS.model, ds.name, cfg.epochs,
               ckpt_dir)
  _, history = train_folds(model, clients, folds, ds.num_classes, cfg, checkpoint_path=checkpoint_path(ckpt_dir),
                           progress=logging.info, fold_execution=FLAGS.fold_execution)
  if not history:
    print(f"nothing to do: {ckpt_dir} already holds {cfg.epochs} epochs.")
    return
  last = history[-1]
  rows = [{"held-out subject": s, "accuracy": f"{a:.3f}", "macro F1": f"{f:.3f}"}
          for s, a, f in zip(held, last["accuracy"], last["macro_f1"])]
  rows.append({"held-out subject": "mean", "accuracy": f"{np.mean(last['accuracy']):.3f}",
               "macro F1": f"{np.mean(last['macro_f1']):.3f}"})
  results.atomic_write_csv(os.path.join(ckpt_dir, "held_out_metrics.csv"), ["subject", "accuracy", "macro_f1"],
                           [[r["held-out subject"], r["accuracy"], r["macro F1"]] for r in rows])
  secs = [h["seconds"] for h in history]
  print(results.format_table(rows, ["held-out subject", "accuracy", "macro F1"],
                             f"{ds.name} | {FLAGS.model} | after epoch {last['epoch']} | {len(held)} folds"))
  print(f"\nseconds per epoch (all folds): first {secs[0]:.1f}, mean of the rest "
        f"{np.mean(secs[1:]) if len(secs) > 1 else float('nan'):.1f}; checkpoints in {ckpt_dir}/")


if __name__ == "__main__":
  app.run(main)
