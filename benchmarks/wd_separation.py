"""Why Whole Determination tells Q from Q/4 but not Q/4 from Q/5: the paper's Fig. 10 question (how large a
difference in sample counts gives a visible ratio difference) asked in our setting, in units of the label-to-label
spread of the ratios.

  python benchmarks/wd_separation.py                       # real MNIST, MLP, middle stage, 2 trainings per row
  python benchmarks/wd_separation.py --dataset=digits --trials=3

Rows: two groups of labels with Q and Q/k examples (k = --ks), then the paper's three groups Q, Q/4, Q/5. Each
training runs until the global model's test accuracy reaches --stage, then records every label's log ratio
log(||W_p|| / ||W_n||) over 5 rounds (exactly as `run_whole_determination`). Printed per row: the gap of the
group means of the log ratio, the pooled within-group spread of the labels, their quotient d
(`attacks.eavesdrop.group_separation`; d >= ~3: a clustering separates the groups, d ~ 1: they overlap), and
how often the clustering with the true number of groups is exact.
"""
import numpy as np
import _flags
from absl import flags

from jaxleak.attacks import eavesdrop as E
from jaxleak.runs import eavesdrop as EV

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist", "mnist or digits")
flags.DEFINE_string("model", "mlp", "mlp or cnn")
flags.DEFINE_list("ks", ["1.25", "2", "4", "16"], "count ratios k of the two-group rows (Q vs Q/k); empty: none")
flags.DEFINE_integer("trials", 2, "trainings per row", lower_bound=1)
flags.DEFINE_float("stage", 0.5, "test accuracy at which the ratios are taken")
flags.DEFINE_integer("window", 5, "rounds of ratios per label (the paper's vector length is not given; ours: 5)",
                     lower_bound=1)


def _wd(factors):
  return EV.WholeDeterminationConfig(trials=FLAGS.trials, factors=factors, stages=(FLAGS.stage,), window=FLAGS.window)


def _row(name, wd, cfg):
  factors = wd.factors
  trials = [t for t in EV.run_whole_determination(cfg, wd) if t.round >= 0]
  pairs = [(a, a + 1) for a in range(len(factors) - 1)]           # adjacent groups: Q vs Q/4, Q/4 vs Q/5
  cells = []
  for a, b in pairs:
    d = [E.group_separation(t.ratios, t.groups)[a, b] for t in trials]
    gaps = [abs(t.ratios.mean(1)[t.groups == a].mean() - t.ratios.mean(1)[t.groups == b].mean()) for t in trials]
    cells.append(f"g{a}-g{b}: gap {np.mean(gaps):.3f}, d {np.mean(d):.2f} ({', '.join(f'{x:.1f}' for x in d)})")
  exact = np.mean([t.success_known_k for t in trials]) if trials else float("nan")
  # Is the within-group spread round-to-round noise (a longer window would average it away) or does it belong to
  # the labels? Noise in a label's mean: its std over the window / sqrt(W); spread: the pooled within-group std.
  noise = np.mean([np.sqrt(np.mean(t.ratios.var(axis=1, ddof=1)) / t.ratios.shape[1]) for t in trials])
  spread = np.mean([abs(t.ratios.mean(1)[t.groups == 0].mean() - t.ratios.mean(1)[t.groups == 1].mean())
                    / E.group_separation(t.ratios, t.groups)[0, 1] for t in trials])
  print(f"| {name} | {len(trials)}/{FLAGS.trials} | {'; '.join(cells)} | {spread:.3f} | {noise:.3f} | "
        f"{100 * exact:.0f} % |", flush=True)


def main(_):
  ks = _flags.numbers("ks", float) if FLAGS.ks else ()
  cfg = EV.EavesdropConfig(dataset=FLAGS.dataset, model=FLAGS.model)
  rows = [(f"Q, Q/{k:g}", _wd((1.0, 1.0 / k))) for k in ks] + [("Q, Q/4, Q/5 (paper)", _wd(EV.PAPER_WD_FACTORS))]
  print(f"{cfg.dataset}, {cfg.model}, stage = test accuracy {FLAGS.stage}; d = gap of group means / within spread")
  print("| groups | reached | adjacent groups: gap of mean log ratio, d (per training) | within-group spread | "
        "noise of a label's mean | exact, k known |")
  print("|---|---|---|---|---|---|")
  for name, wd in rows:                          # every row's settings checked above, before any output or work
    _row(name, wd, cfg)


if __name__ == "__main__":
  _flags.run(main)
