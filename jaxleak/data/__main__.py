"""`python -m jaxleak.data`: every dataset name, whether it can be used here (or what it needs), what it is."""
import sys

from jaxleak.data.catalogue import describe


def main(argv) -> int:
  if argv[1:] in (["--help"], ["-h"], ["--helpshort"]):
    argv = argv[:1]
  if len(argv) > 1:
    print(f"error: python -m jaxleak.data takes no arguments (got {' '.join(argv[1:])}); it lists the datasets.",
          file=sys.stderr)
    return 2
  print("Datasets (--dataset=<name>; in studies --set datasets=<name>,...). Every HAR dataset serves the Eavesdrop "
        "runs too.\n" + describe())
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
