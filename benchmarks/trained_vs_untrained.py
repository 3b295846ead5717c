"""Table 1-style comparison: the five attacks on trained vs untrained models, shuffle vs sequential, with and
without LDP (sigma = 0.1, tau = 1.0, whole-model batch clipping), through the library.

  python benchmarks/trained_vs_untrained.py --model=tinyhar --checkpoint_dir=checkpoints/hapt_tinyhar
  python benchmarks/trained_vs_untrained.py --model=deepconvlstm --checkpoint_dir=... --clients=1,2,3

Attacks only the clients that have a trained fold in --checkpoint_dir (or --clients). Prints a markdown table of
ClassAcc and LnAcc (mean over clients) per attack and setting.
"""
import _flags
from absl import flags

from jaxleak import storage
from jaxleak.privacy import LdpConfig
from jaxleak.runs import fold_training
from jaxleak.runs.leakage import LeakageConfig, ldp_setting, run_ldp_sweep

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "tinyhar", "model")
flags.DEFINE_string("dataset", "hapt", "dataset")
flags.DEFINE_string("checkpoint_dir", None, "trained folds (train_models.py)")
flags.DEFINE_list("clients", None, "subjects (default: those with a trained fold)")
flags.mark_flag_as_required("checkpoint_dir")


def main(_):
  if FLAGS.clients:
    clients = _flags.numbers("clients")
  else:
    header = storage.read_checkpoint_header(fold_training.checkpoint_path(FLAGS.checkpoint_dir))
    clients = tuple(header["meta"]["held_out_subjects"])
  settings = {"none": LdpConfig(), "noise 0.1 + clip 1.0": ldp_setting(0.1, 1.0)}
  rows = {}
  for state in ("untrained", "trained"):
    for sampling in ("shuffle", "sequential"):
      cfg = LeakageConfig(dataset=FLAGS.dataset, model=FLAGS.model, sampling=sampling, clients=clients,
                          checkpoint_dir=FLAGS.checkpoint_dir if state == "trained" else None)
      for ldp_name, res in run_ldp_sweep(cfg, settings).items():
        for r in res.summary_rows():
          rows.setdefault(r["attack"], {})[(state, sampling, ldp_name)] = (r["class_acc"][0], r["lnacc"][0])
  cols = [(s, p, l) for l in settings for s in ("untrained", "trained") for p in ("shuffle", "sequential")]
  print(f"{FLAGS.dataset}, {FLAGS.model}, {len(clients)} clients; ClassAcc / LnAcc in %, mean over clients\n")
  print("| attack | " + " | ".join(f"{s[0].upper()} {p} {l}" for s, p, l in cols) + " |")
  print("|---" * (len(cols) + 1) + "|")
  for attack, vals in rows.items():
    print(f"| {attack} | " + " | ".join(f"{100 * vals[c][0]:.1f} / {100 * vals[c][1]:.1f}" for c in cols) + " |")


if __name__ == "__main__":
  _flags.run(main)
