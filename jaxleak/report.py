"""The papers' figures and tables from any results, with epsilon for every LDP setting.

  python -m jaxleak.report studies/ldp                      # a study folder -> studies/ldp/report/index.html
  python -m jaxleak.report results/single_step              # a run's results folder (experiments/*.py)
  python -m jaxleak.report results --output_dir=reports/all # every study and run below a folder
  python -m jaxleak.report studies/ldp --delta=1e-6 --rounds=50   # epsilon at another delta, over 50 rounds

Writes one folder, whole: index.html (every figure and table with the settings behind them), figures/*.png,
tables/*.csv and *.md, report.json. Needs the extra `plots` (matplotlib); epsilon needs `accounting`
(dp-accounting): pip install 'jaxleak[plots,accounting]'.
"""
from absl import flags

from jaxleak import cli

FLAGS = flags.FlagValues()
_d = dict(flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "The report folder (default: <results>/report); replaced whole.", **_d)
flags.DEFINE_float("delta", 1e-5, "delta of every epsilon, in (0, 1).", **_d)
flags.DEFINE_integer("rounds", 1, "Rounds a client's LDP releases are composed over (x the setting's own releases: "
                     "S local steps for per-step LDP).", **_d)


def main(argv):
  args = argv[1:]
  if len(args) != 1:
    raise cli.FlagError("give one results folder: a study folder (--study_dir of python -m jaxleak.study), a run's "
                        "--output_dir, or a folder holding several (e.g. python -m jaxleak.report results).")
  cli.check(FLAGS, "delta", 0 < FLAGS.delta < 1, "in (0, 1), e.g. 1e-5")
  cli.positive_int(FLAGS, "rounds")
  from jaxleak.runs import report as R
  from jaxleak.runs.report.figures import pyplot
  pyplot()                                             # the missing extra is named before any reading
  out, report = R.write_report(args[0], FLAGS.output_dir, delta=FLAGS.delta, rounds=FLAGS.rounds, progress=print)
  for w in report.warnings:
    print(f"warning: {w}")
  nf, nt = len(report.figures), len(report.tables)
  print(f"{nf} figure{'s' * (nf != 1)}, {nt} table{'s' * (nt != 1)} -> {out}/index.html")


if __name__ == "__main__":
  cli.run(main, FLAGS)
