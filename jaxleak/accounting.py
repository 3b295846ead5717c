"""Privacy budgets of LDP settings: epsilon of the Gaussian mechanism: exact, and through Google's dp-accounting.

An LDP setting (noise std sigma, clip norm tau) releases a clipped update plus N(0, sigma^2 I) noise. With the
clip norm as the L2 sensitivity (add/remove one client's data moves the clipped update by at most tau), one
release is the Gaussian mechanism with noise multiplier z = sigma / tau; k releases (the local steps of a
multi-step update with per-step noise, or a client's rounds) are its k-fold composition. epsilon is reported at a
user-chosen delta by one of three methods:

  * "exact": the Gaussian mechanism's privacy profile in closed form (Balle and Wang 2018, Thm. 8), k releases
    being one of mu = sqrt(k) / z (Gaussian DP composes in quadrature: Dong, Roth and Su 2022, Cor. 3.3); solved
    for epsilon to ~1e-12, in plain Python (no extra needed, ~0.2 ms a setting);
  * "pld": dp_accounting's privacy loss distributions (the optional extra `accounting`): the same value from above,
    within its pessimistic discretisation (~1e-3 relative here), ~8 ms a setting;
  * "rdp": Renyi DP over dp_accounting's default orders (a looser upper bound, the one DP-SGD libraries quote).

No clipping (tau = 0 or inf) means unbounded sensitivity and no noise (sigma = 0) means a deterministic release:
epsilon is infinite in both cases, and `Epsilon.reason` says why in words. Noise so small against the clip norm
that epsilon leaves float range (z below about 1e-150) is infinite too. Beyond epsilon ~ 5e5 (z below about
1e-3 for one release) dp_accounting's PLD overflows, and below delta ~ 1e-15 (its truncated tail mass) it gives
no finite epsilon: "pld" then reports the RDP upper bound, with `method="rdp"` and a `reason` saying so.
Arguments are Python or NumPy numbers (or concrete 0-d arrays); anything else is refused naming it.

>>> e = gaussian_epsilon(noise_std=0.1, clip_norm=0.1, delta=1e-5)     # one release, z = 1
>>> round(e.value, 1), e.reason
(4.4, '')
>>> round(gaussian_epsilon(0.1, 0.1, method="exact").value, 3)
4.377
>>> describe(gaussian_epsilon(noise_std=0.1, clip_norm=0.0))
'inf (no clipping: unbounded sensitivity)'
"""
from __future__ import annotations

import functools
import math
import numbers
import warnings
from typing import NamedTuple

METHODS = ("exact", "pld", "rdp")
DEFAULT_DELTA = 1e-5


class Epsilon(NamedTuple):
  """epsilon of one LDP setting: `value` (inf when unbounded), the accountant used, delta, number of releases,
  and `reason`: why it is infinite, in words; '' when finite, unless PLD fell back to RDP (then it says so)."""
  value: float
  method: str
  delta: float
  releases: int
  reason: str


def _dp_accounting():
  try:
    import dp_accounting
  except ImportError:
    raise ImportError("epsilon needs Google's dp-accounting, the optional extra 'accounting': "
                      "pip install 'jaxleak[accounting]' (or pip install dp-accounting).") from None
  return dp_accounting


def _clipped(clip_norm: float) -> bool:
  return 0 < clip_norm < math.inf


def _number(v, kind=numbers.Real):
  """v as a Python number when it is one (Python or NumPy scalar, or a concrete 0-d array), else None."""
  if not isinstance(v, numbers.Number) and getattr(v, "shape", None) == ():
    try:
      v = v.item()                                 # a 0-d NumPy or concrete JAX array (a tracer has no value)
    except Exception:
      return None
  if isinstance(v, bool) or not isinstance(v, kind):
    return None
  return int(v) if kind is numbers.Integral else float(v)


def _check(noise_std, clip_norm, releases, delta, method) -> tuple[float, float, int, float]:
  """The arguments as Python numbers, or ValueError naming the first that is not what it must be."""
  out = []
  for name, v in (("noise_std", noise_std), ("clip_norm", clip_norm)):
    x = _number(v)
    if x is None or math.isnan(x) or x < 0:
      raise ValueError(f"{name}={v!r}: must be a number >= 0 (0 or inf clip_norm = no clipping).")
    out.append(x)
  if math.isinf(out[0]):
    raise ValueError(f"noise_std={noise_std!r}: must be finite (noise of infinite std releases nothing).")
  k = _number(releases, numbers.Integral)
  if k is None or k < 1:
    raise ValueError(f"releases={releases!r}: must be a positive integer (the updates composed).")
  d = _number(delta)
  if d is None or not 0 < d < 1:
    raise ValueError(f"delta={delta!r}: must be in (0, 1), e.g. 1e-5.")
  if method not in METHODS:
    raise ValueError(f"method={method!r}: must be one of {', '.join(METHODS)}.")
  return out[0], out[1], k, d


def gaussian_epsilon(noise_std: float, clip_norm: float, *, releases: int = 1, delta: float = DEFAULT_DELTA,
                     method: str = "pld") -> Epsilon:
  """epsilon at `delta` of `releases` Gaussian releases with noise std `noise_std` and L2 sensitivity
  `clip_norm` (both in the gradient's units). Raises ValueError naming a bad argument, ImportError naming the
  extra when dp-accounting is missing (only for settings with a finite epsilon)."""
  noise_std, clip_norm, releases, delta = _check(noise_std, clip_norm, releases, delta, method)
  if not _clipped(clip_norm):
    return Epsilon(math.inf, method, delta, releases, "no clipping: unbounded sensitivity")
  if noise_std == 0:
    return Epsilon(math.inf, method, delta, releases, "no noise: a deterministic release")
  z = float(noise_std) / float(clip_norm)
  if z > MAX_NOISE_MULTIPLIER:
    raise ValueError(f"noise_std / clip_norm = {z:.3g}: beyond {MAX_NOISE_MULTIPLIER:g} the accountants overflow "
                     "(and epsilon is 0 to any printed digit); check the units of noise_std and clip_norm.")
  if method == "exact":
    mu = math.sqrt(releases) / z
    if mu > _MAX_MU:
      return Epsilon(math.inf, method, delta, releases,
                     f"noise negligible: noise multiplier z = {z:.3g}, epsilon beyond float range")
    return Epsilon(exact_gaussian_epsilon(mu, delta), method, delta, releases, "")
  value, used, reason = _epsilon(z, releases, float(delta), method)
  return Epsilon(value, used, delta, releases, reason)


#: Beyond this mu (epsilon ~ mu^2 / 2) epsilon leaves float range.
_MAX_MU = 1e150


def _log_ndtr(x: float) -> float:
  """log Phi(x), Phi the standard normal CDF, accurate in both tails (erfc down to x = -30, then the asymptotic
  series, whose next term is below 1e-12 there)."""
  if x > -30:
    return math.log(0.5 * math.erfc(-x / math.sqrt(2)))
  r = 1 / (x * x)
  return -x * x / 2 - math.log(-x) - 0.5 * math.log(2 * math.pi) + math.log1p(r * (-1 + r * (3 + r * (-15 + 105 * r))))


def _log_delta(eps: float, mu: float) -> float:
  """log delta(eps) of the mu-GDP Gaussian mechanism: delta = Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu),
  computed as log Phi(a) + log(1 - e^d), d = eps + log Phi(b) - log Phi(a) < 0, so that neither term is formed."""
  la = _log_ndtr(mu / 2 - eps / mu)
  d = eps + _log_ndtr(-mu / 2 - eps / mu) - la
  if d >= 0:                                       # rounding, where delta is far below float resolution of Phi(a)
    return -math.inf
  return la + (math.log(-math.expm1(d)) if d > -math.log(2) else math.log1p(-math.exp(d)))


def exact_gaussian_epsilon(mu: float, delta: float) -> float:
  """The smallest epsilon >= 0 at which the Gaussian mechanism of mu = sensitivity / noise std (for k releases,
  sqrt(k) times one's) is (epsilon, delta)-DP: delta(epsilon) = delta solved by bisection to a relative 1e-12,
  returning the upper end (a valid bound). mu > 0 and delta in (0, 1), both finite."""
  if not (math.isfinite(mu) and mu > 0 and 0 < delta < 1):
    raise ValueError(f"exact_gaussian_epsilon: mu={mu!r} must be a finite number > 0 and delta={delta!r} in (0, 1).")
  target = math.log(delta)
  if _log_delta(0.0, mu) <= target:
    return 0.0
  lo, hi = 0.0, max(1.0, mu * mu / 2 + mu)         # delta(mu^2/2 + mu) = Phi(-1/2) - ... : bracket by doubling
  while _log_delta(hi, mu) > target:
    lo, hi = hi, 2 * hi
  while hi - lo > 1e-12 * hi:
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if _log_delta(mid, mu) > target else (lo, mid)
  return hi


#: The largest noise multiplier sigma / tau accepted (dp_accounting squares it).
MAX_NOISE_MULTIPLIER = 1e100
#: Above this RDP epsilon, PLD is not computed: its grid interval (1e-3 of epsilon) overflows exp() in
#: dp_accounting near 700, and a finer grid would take millions of points.
PLD_MAX_EPSILON = 5e5


@functools.lru_cache(maxsize=4096)
def _epsilon(z: float, releases: int, delta: float, method: str) -> tuple[float, str, str]:
  """(epsilon, accountant used, reason) for noise multiplier z."""
  dpa = _dp_accounting()
  event = dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(z), releases)
  rdp = dpa.rdp.RdpAccountant()
  try:
    with warnings.catch_warnings():                 # numpy's overflow warnings for z ~ 1e-154: handled below
      warnings.simplefilter("ignore", RuntimeWarning)
      rdp.compose(event)
      eps_rdp = float(rdp.get_epsilon(delta))
  except (OverflowError, ZeroDivisionError):
    eps_rdp = math.inf
  if math.isinf(eps_rdp):
    return math.inf, method, f"noise negligible: noise multiplier z = {z:.3g}, epsilon beyond float range"
  if method == "rdp":
    return eps_rdp, "rdp", ""
  if eps_rdp > PLD_MAX_EPSILON:
    return eps_rdp, "rdp", f"RDP upper bound: PLD overflows beyond epsilon {PLD_MAX_EPSILON:g}"
  # The PLD grid is sized to the loss: a fixed 1e-4 interval takes minutes for z << 1 (epsilon in the
  # thousands); 1e-3 of the RDP bound keeps it milliseconds with a relative discretisation error ~1e-3.
  pld = dpa.pld.PLDAccountant(value_discretization_interval=max(1e-4, 1e-3 * eps_rdp))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", RuntimeWarning)
    pld.compose(event)
    eps_pld = float(pld.get_epsilon(delta))
  if not math.isfinite(eps_pld):
    if any(issubclass(w.category, RuntimeWarning) for w in caught):
      # Near epsilon 700, exp(-loss) underflows and dp_accounting's (mass - delta) / mass overflows to inf.
      return eps_rdp, "rdp", "RDP upper bound: PLD overflows at an epsilon this large"
    # delta below the PLD's truncated tail mass (~1e-15)
    return eps_rdp, "rdp", f"RDP upper bound: PLD gives no finite epsilon at delta {delta:.3g}"
  for w in caught:                                # a finite answer: pass on what dp_accounting said
    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  return eps_pld, "pld", ""


def describe(eps: Epsilon, digits: int = 3) -> str:
  """'4.38' or 'inf (no clipping: unbounded sensitivity)'."""
  if not isinstance(eps, Epsilon):
    raise TypeError(f"describe: eps must be an Epsilon (from gaussian_epsilon), got {type(eps).__name__}.")
  if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
    raise ValueError(f"describe: digits must be a positive integer (significant digits), got {digits!r}.")
  if math.isinf(eps.value):
    return f"inf ({eps.reason})" if eps.reason else "inf"
  return f"{eps.value:.{digits}g}"
