"""Flag checks shared by the benchmark scripts: a bad value is a one-line usage error, not a traceback."""
from absl import app, flags

from jaxleak import cli


def numbers(name: str, kind=int, *, positive: bool = True, fv: flags.FlagValues = flags.FLAGS):
  """The comma-separated list flag `name` as ints (kind=int) or floats; None when unset; app.UsageError if bad."""
  try:
    values = (cli.int_list if kind is int else cli.float_list)(fv, name, unique=False)
  except cli.FlagError as e:
    raise app.UsageError(str(e)) from None
  if values is not None and positive and min(values) <= 0:
    raise app.UsageError(f"--{name}: give positive numbers; got {','.join(fv[name].value)}.")
  return values
