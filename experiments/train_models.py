"""Trains the global model of every leave-one-subject-out fold (spec 7.4), all folds in one compiled step.

  python experiments/train_models.py --dataset=hapt --model=tinyhar --epochs=5
  python experiments/single_step_leakage.py --model=tinyhar --model_state=trained    # attack the trained folds

A checkpoint (one self-verifying file, folds.ckpt) goes to --checkpoint_dir (default checkpoints/<dataset>_<model>)
after every epoch; rerunning the same command resumes a killed run, and a larger --epochs continues a finished
one. Prints each fold's held-out accuracy and macro F1.
"""
import os

import numpy as np
from absl import flags

from jaxleak import cli
from jaxleak import data as D
from jaxleak import models, storage
from jaxleak.runs import fold_training as T
from jaxleak.runs.tables import format_table

FLAGS = flags.FlagValues()
_d = dict(flag_values=FLAGS)
cli.define_har_data_flags(FLAGS)
flags.DEFINE_integer("epochs", 100, "Epochs (the reference: 100).", **_d)
flags.DEFINE_integer("batch_size", 100, "Training batch size (windows per step).", **_d)
flags.DEFINE_float("lr", 1e-4, "Adam learning rate (> 0; decayed x0.9 every 10 epochs).", **_d)
flags.DEFINE_float("weight_decay", 1e-6, "L2 weight decay added to the gradient (>= 0).", **_d)
flags.DEFINE_bool("class_weighted", True, "Class-balanced cross-entropy weights.", **_d)
flags.DEFINE_list("folds", None, "Held-out subject ids to train (default: every LOSO split).", **_d)
flags.DEFINE_integer("seed", 1, "Seed (init, shuffling, dropout).", **_d)
flags.DEFINE_string("checkpoint_dir", None, "Default: checkpoints/<dataset>_<model>.", **_d)
flags.DEFINE_enum("fold_execution", "auto", list(T.FOLD_EXECUTIONS),
                  "All folds in one vmapped step, or one compiled step per fold ('auto': sequential on CPU, where "
                  "vmapped convolutions over folds are slower; vmap on accelerators).", **_d)


def main(argv):
  cli.no_positional(argv)
  models.require(FLAGS.model, "fold_training")
  cli.check_data_flags(FLAGS)
  cli.positive_int(FLAGS, "epochs")
  cli.positive_int(FLAGS, "batch_size")
  cli.finite(FLAGS, "lr", 0.0, lo_open=True)
  cli.finite(FLAGS, "weight_decay", 0.0)
  wanted = cli.int_list(FLAGS, "folds")
  ckpt_dir = FLAGS.checkpoint_dir or cli.default_checkpoint_dir(FLAGS.dataset, FLAGS.model)
  cli.writable(ckpt_dir, "checkpoint_dir")
  cfg = T.TrainConfig(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, lr=FLAGS.lr, weight_decay=FLAGS.weight_decay,
                      class_weighted=FLAGS.class_weighted, seed=FLAGS.seed)
  ds = D.load(FLAGS.dataset, data_dir=FLAGS.data_dir, scale=FLAGS.synthetic_scale, seed=FLAGS.seed)
  clients = D.make_clients(ds)
  held = [s for s, _ in ds.loso_splits()]
  if wanted is not None:
    unknown = [s for s in wanted if s not in held]
    if unknown:
      raise cli.FlagError(f"--folds: {unknown} are not LOSO held-out subjects of {ds.name}: {held}")
    held = list(wanted)
  folds = T.Folds(tuple(clients.subject_ids.index(s) for s in held))
  model = models.build(FLAGS.model, ds.num_classes, head_bias=FLAGS.head_bias)
  cli.progress(f"training {len(held)} folds of {FLAGS.model} on {ds.name} for {cfg.epochs} epochs -> {ckpt_dir}")
  _, history = T.train_folds(model, clients, folds, ds.num_classes, cfg, checkpoint_path=T.checkpoint_path(ckpt_dir),
                             progress=cli.progress, fold_execution=FLAGS.fold_execution, dataset_name=ds.name)
  if not history:
    print(f"nothing to do: {ckpt_dir} already holds {cfg.epochs} epochs.")
    return
  last = history[-1]
  rows = [{"held-out subject": s, "accuracy": f"{a:.3f}", "macro F1": f"{f:.3f}"}
          for s, a, f in zip(held, last["accuracy"], last["macro_f1"])]
  rows.append({"held-out subject": "mean", "accuracy": f"{np.mean(last['accuracy']):.3f}",
               "macro F1": f"{np.mean(last['macro_f1']):.3f}"})
  storage.write_csv(os.path.join(ckpt_dir, "held_out_metrics.csv"), ["subject", "accuracy", "macro_f1"],
                    [[r["held-out subject"], r["accuracy"], r["macro F1"]] for r in rows])
  secs = [h["seconds"] for h in history]
  print(format_table(rows, ["held-out subject", "accuracy", "macro F1"],
                     f"{ds.name} | {FLAGS.model} | after epoch {last['epoch']} | {len(held)} folds"))
  rest = f", mean of the rest {np.mean(secs[1:]):.1f}" if len(secs) > 1 else ""
  print(f"\nseconds per epoch (all folds): first {secs[0]:.1f}{rest}; checkpoints in {ckpt_dir}/")


if __name__ == "__main__":
  cli.run(main, FLAGS)
