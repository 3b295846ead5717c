"""`python -m jaxleak`: what there is to run (the package itself runs nothing)."""
import sys

USAGE = """jaxleak: label leakage in federated learning, in JAX. The commands:

  python experiments/single_step_leakage.py   # HAR, single-step (FedSGD) updates: LLG, LLG*, EBI, LLBG, iLRG, RLU
  python experiments/multi_step_leakage.py    # HAR, multi-step (FedAvg) updates
  python experiments/train_models.py          # trained leave-one-subject-out models for --model_state=trained
  python experiments/eavesdrop.py             # Eavesdrop: Class Sniffing, Quantity Inference, Whole Determination
  python -m jaxleak.study list                # the papers' whole grids as resumable, shardable studies
  python -m jaxleak.report <folder>           # the papers' figures and tables from studies and runs
  python -m jaxleak.data                      # the datasets, and which of them this machine has

Each takes --helpshort. The experiments/ scripts live in the repository (README.md), beside the package."""


def main(argv) -> int:
  if argv[1:] in (["--help"], ["-h"], ["--helpshort"]):
    argv = argv[:1]
  if len(argv) > 1:
    print(f"error: python -m jaxleak takes no arguments (got {' '.join(argv[1:])}); it lists the commands.",
          file=sys.stderr)
    return 2
  print(USAGE)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
