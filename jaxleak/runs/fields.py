"""Field checks shared by the runs' configs (`LeakageConfig`, `TrainConfig`, `EavesdropConfig`,
`WholeDeterminationConfig`): each raises a ValueError that starts with the field's name, says what it got and what
is allowed, so the study engine can prefix it (`wd_...`) and the drivers show it as one line."""
from __future__ import annotations

import math

from jaxleak import data as D
from jaxleak.types import FLOAT32_MAX, is_int


def integer(name: str, value, minimum: int = 1) -> None:
  """`value` is an integer (Python or NumPy; not a bool) >= `minimum`."""
  if not is_int(value) or value < minimum:
    allowed = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    raise ValueError(f"{name} must be {allowed}, got {value!r}.")


#: The largest seed: JAX's PRNG keys take 32 bits of it, so seed 2**32 would give the same key as seed 0 (and the
#: same results under another name).
MAX_SEED = 2 ** 32 - 1


def seed(name: str, value, span: int = 1) -> None:
  """`value` is a seed in [0, MAX_SEED], and so are the `span` consecutive seeds from it (replicates, trials)."""
  integer(name, value, minimum=0)
  if span > MAX_SEED + 1:
    raise ValueError(f"{span:,} consecutive seeds (one per replicate/trial) from {name}={value!r}: at most 2**32 "
                     "exist (JAX keys take 32 bits of a seed, so more would repeat earlier ones' results).")
  if value + span - 1 > MAX_SEED:
    what = "" if span == 1 else f" so that its {span} consecutive seeds (one per replicate/trial) are"
    raise ValueError(f"{name} must be at most {MAX_SEED - span + 1:,}{what} below 2**32, got {value!r}: JAX keys "
                     "take 32 bits of a seed, so a larger one would repeat the results of a smaller one.")


def off_or_float32(name: str, value) -> None:
  """`value` is a number in [0, FLOAT32_MAX], 0 meaning off: it is computed in float32, where a larger finite value
  would become inf (1e300 as a noise std would be infinite noise)."""
  if not (math.isfinite(value) and 0 <= value <= FLOAT32_MAX):
    raise ValueError(f"{name} must be a number in [0, {FLOAT32_MAX:.4g}] (0 = off; it is computed in float32, "
                     f"which holds no more), got {value}.")


def boolean(name: str, value) -> None:
  """`value` is True or False (a string such as 'no' would read as True)."""
  if not isinstance(value, bool):
    raise ValueError(f"{name} must be True or False, got {value!r}.")


def data_source(dataset: str, data_dir, synthetic_scale: float) -> None:
  """`data_dir` and `synthetic_scale` only where `dataset` reads them: ignoring them would label a run with a
  setting it never had."""
  if data_dir and dataset not in D.FILE_DATASETS:
    raise ValueError(f"data_dir is read only with dataset {', '.join(D.FILE_DATASETS)}; {dataset!r} does not use it: "
                     "drop it.")
  if synthetic_scale != 1.0 and dataset not in D.SYNTHETIC_DATASETS:
    raise ValueError(f"synthetic_scale applies to synthetic datasets only; {dataset!r} is used whole: drop it.")
