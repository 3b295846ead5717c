"""epsilon of LDP settings against the closed form of the Gaussian mechanism (Balle and Wang 2018, Thm. 8):
with mu = tau / sigma per release and mu * sqrt(k) for k releases (Gaussian DP composes in quadrature),
delta(eps) = Phi(mu/2 - eps/mu) - exp(eps) Phi(-mu/2 - eps/mu)."""
import math
import sys

import numpy as np
import pytest
from scipy.special import log_ndtr

from jaxleak import accounting

pytest.importorskip("dp_accounting")


def exact_epsilon(mu: float, delta: float) -> float:
  def delta_of(eps):
    a = log_ndtr(mu / 2 - eps / mu)
    b = eps + log_ndtr(-mu / 2 - eps / mu)
    return math.exp(a) - math.exp(b)
  lo, hi = 0.0, 1.0
  while delta_of(hi) > delta:
    hi *= 2
  for _ in range(200):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if delta_of(mid) > delta else (lo, mid)
  return hi


def classical_rdp_bound(mu: float, delta: float) -> float:
  """min over orders a > 1 of a mu^2 / 2 + log(1/delta) / (a - 1) (Mironov 2017, Prop. 3)."""
  orders = np.linspace(1.0001, 5000, 2_000_000)
  return float(np.min(orders * mu ** 2 / 2 + math.log(1 / delta) / (orders - 1)))


@pytest.mark.parametrize("sigma,tau,k,delta", [(0.1, 0.1, 1, 1e-5), (0.1, 0.5, 1, 1e-5), (1.0, 0.5, 1, 1e-6),
                                               (0.1, 0.1, 5, 1e-5), (2.0, 1.0, 100, 1e-5), (0.1, 1.5, 1, 1e-3)])
def test_pld_matches_the_closed_form_and_rdp_lies_between_it_and_the_classical_bound(sigma, tau, k, delta):
  mu = tau / sigma * math.sqrt(k)
  exact = exact_epsilon(mu, delta)
  pld = accounting.gaussian_epsilon(sigma, tau, releases=k, delta=delta, method="pld")
  rdp = accounting.gaussian_epsilon(sigma, tau, releases=k, delta=delta, method="rdp")
  assert pld.reason == "" and pld.releases == k and pld.delta == delta
  assert pld.value == pytest.approx(exact, rel=3e-3), (pld.value, exact)
  assert exact * (1 - 1e-6) <= rdp.value <= classical_rdp_bound(mu, delta) * (1 + 1e-3)


@pytest.mark.parametrize("mu", [1e-3, 0.1, 1.0, 5.0, 50.0, 1e3, 1e4])
@pytest.mark.parametrize("delta", [1e-15, 1e-10, 1e-5, 1e-3, 0.1, 0.5])
def test_exact_epsilon_is_the_smallest_at_which_the_true_delta_is_met(mu, delta):
  # dp_accounting's own exact privacy profile of the Gaussian mechanism (not its discretised PLD) at our epsilon:
  # delta met (to its float precision), and missed at an epsilon 1e-6 smaller; 0 where delta(0) <= delta already.
  from dp_accounting.pld.privacy_loss_mechanism import GaussianPrivacyLoss
  profile = GaussianPrivacyLoss(standard_deviation=1.0, sensitivity=mu).get_delta_for_epsilon
  eps = accounting.exact_gaussian_epsilon(mu, delta)
  assert profile(eps) == pytest.approx(delta, rel=1e-7) if eps > 0 else profile(0.0) <= delta
  if eps > 0:
    assert profile(eps * (1 - 1e-6)) > delta
  if mu <= 100:                                                       # where the scipy form above keeps precision
    assert eps == pytest.approx(exact_epsilon(mu, delta), rel=1e-11, abs=1e-12)


@pytest.mark.parametrize("sigma,tau,k", [(0.1, 0.1, 1), (0.1, 0.5, 1), (1.0, 0.5, 10), (2.0, 1.0, 100),
                                         (0.05, 1.0, 1), (3.0, 0.01, 1)])
def test_exact_epsilon_lies_below_pld_by_its_discretisation_and_below_rdp(sigma, tau, k):
  exact = accounting.gaussian_epsilon(sigma, tau, releases=k, method="exact")
  pld = accounting.gaussian_epsilon(sigma, tau, releases=k, method="pld")
  rdp = accounting.gaussian_epsilon(sigma, tau, releases=k, method="rdp")
  assert (exact.method, exact.reason, exact.releases) == ("exact", "", k)
  assert exact.value <= pld.value <= exact.value * (1 + 3e-3) + 1e-4     # PLD is pessimistic: from above
  assert exact.value < rdp.value
  one = accounting.gaussian_epsilon(sigma / math.sqrt(k), tau, method="exact")   # Gaussian DP, in quadrature
  assert exact.value == pytest.approx(one.value, rel=1e-11)


def test_exact_epsilon_needs_no_extra_and_refuses_what_is_not_a_gaussian_mechanism(monkeypatch):
  monkeypatch.setitem(sys.modules, "dp_accounting", None)
  assert accounting.gaussian_epsilon(0.1, 0.1, method="exact").value == pytest.approx(4.3771780957, rel=1e-10)
  assert accounting.gaussian_epsilon(1e-160, 1.0, method="exact").reason.startswith("noise negligible")
  assert accounting.gaussian_epsilon(0.1, 0.0, method="exact").reason == "no clipping: unbounded sensitivity"
  for mu, delta in ((0.0, 1e-5), (-1.0, 1e-5), (math.inf, 1e-5), (math.nan, 1e-5), (1.0, 0.0), (1.0, 1.0)):
    with pytest.raises(ValueError, match="exact_gaussian_epsilon: mu="):
      accounting.exact_gaussian_epsilon(mu, delta)


def test_composition_equals_one_release_at_sqrt_k_less_noise():
  k5 = accounting.gaussian_epsilon(0.5, 0.25, releases=5).value
  one = accounting.gaussian_epsilon(0.5 / math.sqrt(5), 0.25).value
  assert k5 == pytest.approx(one, rel=3e-3)


def test_more_noise_or_a_smaller_clip_means_a_smaller_epsilon():
  by_sigma = [accounting.gaussian_epsilon(s, 1.0).value for s in (0.5, 1.0, 2.0, 4.0)]
  by_tau = [accounting.gaussian_epsilon(1.0, t).value for t in (2.0, 1.0, 0.5)]
  assert by_sigma == sorted(by_sigma, reverse=True) and by_tau == sorted(by_tau, reverse=True)


@pytest.mark.parametrize("sigma,tau,reason", [(0.1, 0.0, "no clipping: unbounded sensitivity"),
                                              (0.1, math.inf, "no clipping: unbounded sensitivity"),
                                              (0.0, 1.0, "no noise: a deterministic release")])
def test_no_clipping_or_no_noise_is_infinite_and_says_why(sigma, tau, reason):
  e = accounting.gaussian_epsilon(sigma, tau)
  assert math.isinf(e.value) and e.reason == reason
  assert accounting.describe(e) == f"inf ({reason})"


@pytest.mark.parametrize("kwargs,message", [
    (dict(noise_std=-0.1, clip_norm=1.0), "noise_std=-0.1"), (dict(noise_std=float("nan"), clip_norm=1.0),
                                                               "noise_std=nan"),
    (dict(noise_std=0.1, clip_norm=1.0, releases=0), "releases=0"),
    (dict(noise_std=0.1, clip_norm=1.0, delta=1.0), "delta=1.0"),
    (dict(noise_std=0.1, clip_norm=1.0, method="moments"), "method='moments'")])
def test_bad_arguments_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    accounting.gaussian_epsilon(**kwargs)


def test_describe_refuses_what_it_cannot_print():
  """Found 2026-12-05 (seventeenth session): digits=-1 ended in "Format specifier missing precision", a float in
  "'float' object has no attribute 'value'"."""
  e = accounting.gaussian_epsilon(1.0, 1.0)
  assert accounting.describe(e, 2) == f"{e.value:.2g}"
  with pytest.raises(ValueError, match="digits must be a positive integer"):
    accounting.describe(e, -1)
  with pytest.raises(TypeError, match="eps must be an Epsilon"):
    accounting.describe(3.0)


def exact_epsilon_log(mu: float, delta: float) -> float:
  """exact_epsilon in log space, for mu in the hundreds (exp(eps) overflows there)."""
  def above(eps):                  # log delta(eps) > log delta, with delta(eps) = e^a (1 - e^(b - a))
    a, b = log_ndtr(mu / 2 - eps / mu), eps + log_ndtr(-mu / 2 - eps / mu)
    return b < a and a + math.log1p(-math.exp(b - a)) > math.log(delta)
  lo, hi = 0.0, max(mu * mu, 1.0)
  while above(hi):
    hi *= 2
  for _ in range(200):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if above(mid) else (lo, mid)
  return hi


@pytest.mark.parametrize("sigma", [1e-3, 1e-4, 1e-12])
def test_tiny_noise_falls_back_to_the_rdp_bound_and_says_so(sigma):
  """Before: OverflowError 'math range error' from dp_accounting's PLD (z = 1e-4: epsilon ~ 5e7), which ended
  `study collect` and the report of a sweep that reached such a setting."""
  e = accounting.gaussian_epsilon(sigma, 1.0)
  rdp = accounting.gaussian_epsilon(sigma, 1.0, method="rdp")
  assert e.method == "rdp" and "RDP upper bound: PLD overflows" in e.reason and e.value == rdp.value
  if sigma >= 1e-4:                   # an upper bound, close to the exact value (1/(2 z^2) dominates both)
    exact = exact_epsilon_log(1.0 / sigma, 1e-5)
    assert exact <= e.value <= exact * 1.1, (exact, e.value)


@pytest.mark.parametrize("sigma", [0.0295, 0.0152831 / 0.517391])
def test_an_epsilon_near_700_says_pld_overflowed_and_warns_nothing(sigma):
  """Found 2026-12-06 (thirty-fifth session), reporting a 1,000-setting LDP sweep: near epsilon 700 dp_accounting's
  PLD divides by exp(-700) and overflows; its RuntimeWarnings reached the user (four lines each) and the fallback
  said "no finite epsilon at delta 1e-05", which was not the reason."""
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    e = accounting.gaussian_epsilon(sigma, 1.0)
  assert e.method == "rdp" and e.reason == "RDP upper bound: PLD overflows at an epsilon this large", e
  exact = exact_epsilon_log(1.0 / sigma, 1e-5)
  assert 600 < exact <= e.value <= exact * 1.1, (exact, e.value)


@pytest.mark.parametrize("delta", [1e-20, 1e-100])
def test_a_delta_below_the_pld_tail_falls_back_to_the_rdp_bound_and_says_so(delta):
  """Before: epsilon inf with no reason (PLD truncates its tails near 1e-15), as if z = 1 gave no privacy."""
  e = accounting.gaussian_epsilon(1.0, 1.0, delta=delta)
  assert e.method == "rdp" and e.reason.startswith("RDP upper bound: PLD gives no finite epsilon at delta")
  assert e.value == accounting.gaussian_epsilon(1.0, 1.0, delta=delta, method="rdp").value
  exact = exact_epsilon_log(1.0, delta)
  assert exact <= e.value <= exact * 1.05, (exact, e.value)


def test_numpy_and_jax_scalars_are_numbers():
  """Before: np.float32(1.0) or a 0-d jax array was refused as 'must be a number'."""
  import jax.numpy as jnp
  want = accounting.gaussian_epsilon(1.0, 0.5, releases=3, delta=1e-6)
  for args in ((np.float32(1.0), np.float64(0.5), np.int64(3), 1e-6), (jnp.float32(1.0), np.array(0.5), 3,
                                                                       np.float64(1e-6))):
    got = accounting.gaussian_epsilon(args[0], args[1], releases=args[2], delta=args[3])
    assert got == want and type(got.value) is float and type(got.releases) is int
  for bad in (dict(noise_std=np.array([1.0])), dict(releases=2.0), dict(releases=np.float32(2.0))):
    with pytest.raises(ValueError, match=f"{next(iter(bad))}="):
      accounting.gaussian_epsilon(**(dict(noise_std=1.0, clip_norm=1.0) | bad))


def test_noise_beyond_float_range_is_infinite_and_absurd_multipliers_are_refused():
  e = accounting.gaussian_epsilon(1e-160, 1.0)
  assert math.isinf(e.value) and e.reason.startswith("noise negligible: noise multiplier z = 1e-160")
  with pytest.raises(ValueError, match=r"noise_std / clip_norm = 1e\+300: beyond 1e\+100"):
    accounting.gaussian_epsilon(1e300, 1.0)
  for bad in (True, math.inf):
    with pytest.raises(ValueError, match="noise_std="):
      accounting.gaussian_epsilon(bad, 1.0)


def test_the_report_shows_the_exact_epsilon_where_pld_falls_back_to_rdp():
  from jaxleak.runs.report.tables import Accountant
  for acct, sigma in ((Accountant(), 1e-4), (Accountant(), 0.5), (Accountant(delta=1e-20), 1.0)):
    b = acct.budget(sigma, 1.0)
    exact = accounting.gaussian_epsilon(sigma, 1.0, delta=acct.delta, method="exact")
    assert b.composed == exact and b.text() == f"{exact.value:.3g}"
    assert b.composed_rdp == accounting.gaussian_epsilon(sigma, 1.0, delta=acct.delta, method="rdp")
  assert Accountant().budget(1e-160, 1.0).text() == "inf (noise negligible)"


def test_a_missing_extra_names_it(monkeypatch):
  monkeypatch.setitem(sys.modules, "dp_accounting", None)
  accounting._epsilon.cache_clear()
  with pytest.raises(ImportError, match=r"pip install 'jaxleak\[accounting\]'"):
    accounting.gaussian_epsilon(0.3, 0.7)
  accounting._epsilon.cache_clear()
