"""RLU beside iLRG, EBI and LLBG on HAPT: single step and the HAR paper's three multi-step settings (N, B, S),
on trained folds (--checkpoint_dir) and on the untrained model, through the library.

  python experiments/train_models.py --dataset=hapt --model=tinyhar --epochs=3 --lr=1e-3 --folds=1,2,3,4,5,6 \\
      --checkpoint_dir=checkpoints/hapt_tinyhar_6folds
  python benchmarks/rlu_comparison.py --model=tinyhar --checkpoint_dir=checkpoints/hapt_tinyhar_6folds

Prints one markdown table: ClassAcc / LnAcc (%, mean over clients) per attack and setting.
"""
import dataclasses

import _flags
from absl import flags

from jaxleak.federated import LocalSteps
from jaxleak.runs.leakage import LeakageConfig, run_leakage

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "tinyhar", "model")
flags.DEFINE_string("checkpoint_dir", None, "trained folds (train_models.py); the trained columns need it")
flags.DEFINE_list("clients", ["1", "2", "3", "4", "5", "6"], "subjects attacked (each needs a trained fold)")
flags.DEFINE_list("attacks", ["ilrg", "ebi", "llbg", "rlu"], "attacks")

SETTINGS = (("single step", None, 100), ("S=5 B=20 N=100", LocalSteps(steps=5, batch_size=20), 100),
            ("S=2 B=50 N=100", LocalSteps(steps=2, batch_size=50), 100),
            ("S=5 B=100 N=500", LocalSteps(steps=5, batch_size=100), 500))


def main(_):
  base = LeakageConfig(model=FLAGS.model, attacks=tuple(FLAGS.attacks), clients=_flags.numbers("clients"))
  states = [("U", None)] + ([("T", FLAGS.checkpoint_dir)] if FLAGS.checkpoint_dir else [])
  columns, cells = [], {}
  for state, ckpt in states:
    for name, local, n in SETTINGS:
      column = f"{state} {name}"
      columns.append(column)
      res = run_leakage(dataclasses.replace(base, checkpoint_dir=ckpt, local=local, num_samples=n))
      for row in res.summary_rows():
        cells[row["attack"], column] = f"{100 * row['class_acc'][0]:.1f} / {100 * row['lnacc'][0]:.1f}"
      print(f"done: {column}", flush=True)
  print("| attack | " + " | ".join(columns) + " |")
  print("|---" * (len(columns) + 1) + "|")
  for attack in FLAGS.attacks:
    print(f"| {attack} | " + " | ".join(cells[attack, c] for c in columns) + " |")


if __name__ == "__main__":
  _flags.run(main)
