"""Flag checks shared by the benchmark scripts: a bad value is a one-line usage error, not a traceback."""
import sys

from absl import app, flags

from jaxleak import cli, compile_cache, gpu_numerics


def numbers(name: str, kind=int, *, positive: bool = True, fv: flags.FlagValues = flags.FLAGS):
  """The comma-separated list flag `name` as ints (kind=int) or floats; None when unset; app.UsageError if bad."""
  try:
    values = (cli.int_list if kind is int else cli.float_list)(fv, name, unique=False)
  except cli.FlagError as e:
    raise app.UsageError(str(e)) from None
  if values is not None and positive and min(values) <= 0:
    raise app.UsageError(f"--{name}: give positive numbers; got {','.join(fv[name].value)}.")
  return values


def run(main) -> None:
  """app.run(main) for a benchmark: a value that a config refuses (say --dataset=foo) is one line on stderr and exit
  status 2, as in the experiments (`jaxleak.cli.execute`); so is a benchmark's own app.UsageError. Unlike
  `cli.run`, the persistent compilation cache is switched on only by an explicit --compilation_cache=<folder> (not
  by default or $JAXLEAK_COMPILATION_CACHE): some benchmarks time compilation, and the subprocesses of others read
  the variable themselves. The numerics are the commands' (`jaxleak.gpu_numerics`: float32 matmuls, and GPU
  determinism where a GPU may be used unless --gpu_determinism=false), so that GPU timings are of what they run."""
  def with_named_cache(argv):
    gpu_numerics.configure(flags.FLAGS.gpu_determinism)
    if flags.FLAGS.compilation_cache:
      compile_cache.configure(compile_cache.resolve(flags.FLAGS.compilation_cache), explicit=True)
    try:
      return main(argv)
    except app.UsageError as e:        # absl would print the whole module docstring before it, and exit with 1
      raise cli.FlagError(str(e)) from None
  app.run(lambda argv: sys.exit(cli.execute(with_named_cache, flags.FLAGS, argv)), flags_parser=cli.parse_or_exit)
