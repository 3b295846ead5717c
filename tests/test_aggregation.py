"""HAR clients under secure aggregation (`aggregate_clients`): cohorts, rounds, and what the server's mean update is."""
import csv
import dataclasses
import importlib.util
import json

import jax
import numpy as np
import pytest

import jaxleak.attacks as A
from experiments import single_step_leakage as SS
from jaxleak import LastLayerGrads, LastLayerParams, cli, models
from jaxleak.runs.leakage import LeakageConfig, run_leakage
from jaxleak.runs.leakage import aggregation
from jaxleak.runs.leakage.prepare import prepare
from jaxleak.runs.leakage.updates import compute_updates
from tests.helpers import mean_ce_head_grads

TINY = dict(dataset="synthetic_tiny", model="deepconvlstm", num_samples=50, dropout=0.0, minmax=False)


def test_cohorts_are_disjoint_full_and_drawn_from_the_key():
  a = aggregation.deal_cohorts(7, 3, jax.random.key(0))
  assert a.shape == (2, 3) and len(set(a.ravel())) == 6 and set(a.ravel()) <= set(range(7))
  np.testing.assert_array_equal(a, aggregation.deal_cohorts(7, 3, jax.random.key(0)))
  assert any(not np.array_equal(a, aggregation.deal_cohorts(7, 3, jax.random.key(s))) for s in range(1, 6))
  assert aggregation.deal_cohorts(4, 4, jax.random.key(0)).shape == (1, 4)
  with pytest.raises(ValueError, match="aggregate_clients=5: the run has only 4 clients"):
    aggregation.deal_cohorts(4, 5, jax.random.key(0))


def test_rounds_take_each_members_next_update_while_every_member_has_one():
  # clients 0..3 hold 3, 2, 4 and 1 updates (sorted by client, as the samplers return them)
  batch_client = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
  keep, cohort, rnd = aggregation.cohort_updates(batch_client, 4, np.array([[0, 2], [1, 3]]))
  np.testing.assert_array_equal(keep, [0, 5, 1, 6, 2, 7, 3, 9])   # cohort 0: min(3, 4) = 3 rounds; cohort 1: 1
  np.testing.assert_array_equal(cohort, [0, 0, 0, 1])
  np.testing.assert_array_equal(rnd, [0, 1, 2, 0])
  means = aggregation.mean_over_members(np.arange(8, dtype=np.float32)[:, None], 2)
  np.testing.assert_array_equal(means[:, 0], [0.5, 2.5, 4.5, 6.5])


def test_an_aggregate_is_the_mean_loss_gradient_over_all_its_members_windows():
  """Mathematics, not our pipeline: at one global model (no dropout, no min-max) the mean of K mean-CE head
  gradients of N windows each is the mean-CE head gradient of the K N windows together, computed here by jax.grad
  on the model's own features."""
  cfg = LeakageConfig(aggregate_clients=2, **TINY)
  prep = prepare(cfg, None, None, None)
  grads = compute_updates(prep, cfg, cfg.ldp, None)
  agg, mean, _ = aggregation.aggregate(prep, grads)
  assert agg.indices.shape == (len(prep.indices) // 2, 100)
  head = models.head_params(prep.variables["params"])
  for a in (0, len(agg.indices) - 1):
    x, y = prep.clients.windows[agg.indices[a]], prep.clients.labels[agg.indices[a]]
    feats = prep.model.apply(prep.variables, x, train=False, return_features=True)[1]
    want = mean_ce_head_grads(feats, y, head.kernel, head.bias)
    np.testing.assert_allclose(mean.bias[a], want.bias, atol=1e-6)
    np.testing.assert_allclose(mean.kernel[a], want.kernel, atol=1e-6)


def test_members_send_the_updates_they_send_without_aggregation():
  cfg = LeakageConfig(aggregate_clients=3, **TINY)
  prep = prepare(cfg, None, None, None)
  alone = prepare(dataclasses.replace(cfg, aggregate_clients=1), None, None, None)
  mine, theirs = compute_updates(prep, cfg, cfg.ldp, None), compute_updates(alone, cfg, cfg.ldp, None)
  where = {(int(s), int(b)): i for i, (s, b) in enumerate(zip(alone.subject_of_batch, alone.batch_index))}
  rows = [where[(int(s), int(b))] for s, b in zip(prep.subject_of_batch, prep.batch_index)]
  assert len(rows) == len(prep.indices) < len(alone.indices)      # 4 clients: one is in no cohort of 3
  np.testing.assert_array_equal(prep.indices, alone.indices[rows])
  np.testing.assert_array_equal(mine.bias, theirs.bias[rows])
  np.testing.assert_array_equal(mine.kernel, theirs.kernel[rows])


@pytest.fixture(scope="module")
def aggregated():
  return run_leakage(LeakageConfig(aggregate_clients=2, attacks=("ebi", "llbg", "ilrg", "llg", "llg_star"), **TINY))


def test_attacks_read_k_n_windows_and_are_scored_per_cohort(aggregated):
  r = aggregated
  assert r.cohorts is not None and len(r.cohorts) == 2 and all(len(c) == 2 for c in r.cohorts)
  assert sorted(s for c in r.cohorts for s in c) == sorted(set(s for c in r.cohorts for s in c))
  assert r.subject_ids == (0, 1) and set(r.batch_client) == {0, 1}
  assert np.all(r.true_counts.sum(1) == 100)
  for pred in r.pred_counts.values():
    assert np.all(pred.sum(1) == 100) and pred.min() >= 0
  # 100 windows at a 128-wide untrained head: iLRG's system is still overdetermined, so it stays near exact
  assert np.nanmean(r.client_metrics["ilrg"].lnacc) > 0.9


def test_a_member_is_guessed_to_hold_a_kth_of_its_round():
  split = aggregation.split_among_members(np.array([[4, 2, 0], [1, 1, 1], [-1, -1, -1]]), 2, 3)
  np.testing.assert_array_equal(split, [[2, 1, 0], [2, 1, 0], [1, 1, 1], [1, 1, 1], [-1, -1, -1], [-1, -1, -1]])


def test_scaled_counts_break_ties_by_class_in_exact_arithmetic():
  """Largest remainder against exact fractions: equal remainders (1/3 of a round of three, say) go to the lower
  class on every machine; float32 shares broke such ties by round-off, differently between XLA versions (found at
  jax 0.7.0, 2026-12-06: 2 of 4 clients' 1/K-split LnAcc moved by 1/N)."""
  from fractions import Fraction
  from jaxleak.runs.leakage.aggregation import scale_counts
  assert scale_counts(np.array([[7, 10, 4]]), 7).tolist() == [[3, 3, 1]]           # three remainders of 1/3
  rng = np.random.default_rng(0)
  for k in (2, 3, 7):
    counts = rng.multinomial(k * 20, rng.dirichlet(np.ones(6) * 0.5, size=300))
    got = scale_counts(counts, 20)
    for row, mine in zip(counts, got):
      share = [Fraction(int(c) * 20, int(row.sum())) for c in row]
      want = [int(x) for x in share]
      for i in sorted(range(6), key=lambda i: (-(share[i] - want[i]), i))[:20 - sum(want)]:
        want[i] += 1
      assert mine.tolist() == want, (row, mine)
  assert scale_counts(np.array([[0, 0], [-1, -1]]), 5).tolist() == [[0, 0], [-1, -1]]   # empty and invalid rows


def test_what_a_round_tells_of_each_client_is_scored_against_its_own_update(aggregated):
  """Written out in NumPy: the 1/K split by largest remainder, LnAcc per member update, mean per client."""
  r = aggregated
  members = prepare(r.config, None, None, None)
  truth = np.stack([np.bincount(members.clients.labels[i], minlength=r.true_counts.shape[1]) for i in members.indices])
  n, k = r.config.num_samples, r.config.aggregate_clients
  for attack in ("ilrg", "ebi"):
    share = r.pred_counts[attack] * n / (k * n)
    guess = np.floor(share).astype(int)
    for row, rest in zip(guess, share - guess):
      row[np.argsort(-rest, kind="stable")[:n - row.sum()]] += 1
    lnacc = np.minimum(truth, np.repeat(guess, k, axis=0)).sum(1) / n
    want = [lnacc[members.batch_client == c].mean() for c in range(members.clients.num_clients)]
    np.testing.assert_allclose(r.member_metrics[attack].lnacc, want, rtol=1e-6)
  assert r.member_ids == members.clients.subject_ids


def test_the_table_and_the_manifest_say_it_is_aggregated(aggregated, tmp_path):
  from jaxleak.runs.leakage import leakage_table, result_files
  assert "secure aggregation of 2 clients: 2 cohorts" in leakage_table(aggregated)
  assert "over cohorts" in leakage_table(aggregated)
  assert "what a round tells of each client: 1/2 of its predicted counts" in leakage_table(aggregated)
  files = result_files(aggregated)
  assert files["members.csv"].splitlines()[0] == files["clients.csv"].splitlines()[0]
  assert len(files["members.csv"].splitlines()) == 1 + 4 * len(aggregated.config.attacks)
  manifest = json.loads(files["manifest.json"])
  assert manifest["config"]["aggregate_clients"] == 2
  assert [tuple(c) for c in manifest["cohorts"]] == list(aggregated.cohorts)


def test_impossible_aggregation_is_refused_before_any_gradient(tmp_path, capsys):
  with pytest.raises(ValueError, match="aggregate_clients=5: the run has only 4 clients"):
    prepare(LeakageConfig(aggregate_clients=5, **TINY), None, None, None)
  with pytest.raises(ValueError, match="aggregate_clients must be a positive integer"):
    LeakageConfig(aggregate_clients=0, **TINY).validate()
  with pytest.raises(ValueError, match="one global model"):
    LeakageConfig(aggregate_clients=2, checkpoint_dir=str(tmp_path), **TINY).validate()
  rc = cli.call(SS.main, SS.FLAGS, ["--dataset=synthetic_tiny", "--aggregate_clients=0", f"--output_dir={tmp_path}"])
  assert rc == 2 and "--aggregate_clients" in capsys.readouterr().err
  rc = cli.call(SS.main, SS.FLAGS, ["--dataset=synthetic_tiny", "--aggregate_clients=2", "--model_state=trained",
                                    f"--output_dir={tmp_path}"])
  assert rc != 0 and "one global model" in capsys.readouterr().err


def test_reports_label_aggregated_runs_and_keep_them_out_of_the_papers_settings(aggregated, tmp_path):
  from jaxleak.runs.leakage import write_leakage
  from jaxleak.runs.report import results as R
  from jaxleak.runs.report import tables as T
  write_leakage(aggregated, str(tmp_path / "agg"))
  (r,) = R.load(str(tmp_path)).har
  assert r.settings["aggregate_clients"] == 2
  assert "secure aggregation of 2" in T.setting_label(r.settings)
  assert not T.undefended(r)                      # not beside the papers' per-client Table 1 and Fig. 3
  assert len(r.attacks["ebi"]["subjects"]) == 2   # scored per cohort
  assert r.attacks["ilrg"]["per_client"]["lnacc"][0] == pytest.approx(
      float(np.nanmean(aggregated.member_metrics["ilrg"].lnacc)), abs=1e-4)      # members.csv, 4 decimals
  pytest.importorskip("matplotlib")
  from jaxleak.runs.report import figures as F
  assert F.attack_bars(r)[:4] == b"\x89PNG"        # bars per cohort, diamonds per client
  from jaxleak.runs import report as RP
  (fig2,) = [f for f in RP.build(R.load(str(tmp_path))).figures if f.path.startswith("figures/fig2")]
  assert "bars are the mean over the cohorts' rounds, whiskers the std over cohorts; diamonds: 1/2" in fig2.caption
  table = T.har_summary_table(R.load(str(tmp_path)), T.Accountant())
  row = next(x for x in table.rows if x[table.columns.index("attack")] == "iLRG")
  assert row[table.columns.index("per-client LnAcc")] == r.attacks["ilrg"]["per_client"]["lnacc"][0]


# --- clients dealt anew every round ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redealt():
  return run_leakage(LeakageConfig(aggregate_clients=2, cohort_dealing="every_round", attacks=("ebi", "ilrg"),
                                   **{**TINY, "num_samples": 20}))


def test_every_round_deals_k_distinct_clients_each_giving_its_next_update(redealt):
  r = redealt
  members = prepare(r.config, None, None, None)
  alone = prepare(dataclasses.replace(r.config, aggregate_clients=1, cohort_dealing="once"), None, None, None)
  k, a = 2, len(r.batch_client)
  assert len(r.cohorts) == a == len(members.indices) // k and r.participation.shape == (a, 4)
  ids = np.asarray(members.clients.subject_ids)
  for row, part in zip(r.cohorts, r.participation):
    assert len(set(row)) == k and sorted(row) == sorted(ids[part].tolist())
  where = {(int(s), int(b)): i for i, (s, b) in enumerate(zip(alone.subject_of_batch, alone.batch_index))}
  rows = [where[(int(s), int(b))] for s, b in zip(members.subject_of_batch, members.batch_index)]
  assert len(set(rows)) == len(rows)                                 # every update at most once
  for s in set(ids.tolist()):                                        # each client's updates in its own order
    mine = members.batch_index[members.subject_of_batch == s]
    np.testing.assert_array_equal(mine, np.arange(len(mine)))
  assert r.subject_ids == tuple(range(a)) and np.all(r.true_counts.sum(1) == 40)   # each round its own unit
  again = prepare(r.config, None, None, None)
  np.testing.assert_array_equal(again.indices, members.indices)      # drawn from the run's key
  other = prepare(dataclasses.replace(r.config, seed=2), None, None, None)
  assert other.cohorts != members.cohorts


def test_each_clients_solved_distribution_is_scored_against_its_own(redealt):
  """Written out in NumPy: each client's own counts over its updates in rounds, scaled to N; the least-squares
  (minimum-norm) profiles of the rounds' predicted counts, negatives to 0, scaled to N; LnAcc per client."""
  r, n = redealt, redealt.config.num_samples
  members = prepare(r.config, None, None, None)
  c = r.true_counts.shape[1]

  def to_n(rows):
    out = []
    for row in np.asarray(rows, np.float64):
      share = row / row.sum() * n if row.sum() > 0 else row
      guess = np.floor(share).astype(int)
      guess[np.argsort(-(share - guess), kind="stable")[:n - guess.sum()]] += 1
      out.append(guess)
    return np.array(out)

  truth = np.stack([np.bincount(members.clients.labels[i], minlength=c) for i in members.indices])
  own = to_n(np.stack([truth[members.batch_client == i].sum(0) for i in range(4)]))
  part = r.participation.astype(np.float64)
  for attack in ("ilrg", "ebi"):
    solved = to_n(np.maximum(np.linalg.pinv(part) @ r.pred_counts[attack], 0.0))
    np.testing.assert_allclose(r.profile_metrics[attack].lnacc, np.minimum(own, solved).sum(1) / n, atol=1e-6)
  assert np.mean(r.profile_metrics["ilrg"].lnacc) > 0.8


def test_a_perfect_reading_of_rounds_of_one_profile_each_gives_every_client_back():
  """Algebra: when each client's updates hold one label mix and the rounds' counts are exact, least squares over
  re-dealt rounds recovers each client's mix exactly (LnAcc 1), which 1/K of each round does not."""
  from jaxleak.runs.leakage import scoring
  cfg = LeakageConfig(aggregate_clients=2, cohort_dealing="every_round", **{**TINY, "num_samples": 20})
  members = prepare(cfg, None, None, None)
  labels = np.zeros_like(members.clients.labels)                    # client i: its windows relabelled to one mix
  for i in range(members.clients.num_clients):
    lo, hi = members.clients.offsets[i], members.clients.offsets[i + 1]
    labels[lo:hi] = i % members.dataset.num_classes
  for rows in members.indices:                                      # every update then holds one label
    assert len(set(labels[rows].tolist())) == 1
  members = dataclasses.replace(members, clients=dataclasses.replace(members.clients, labels=labels))
  truth = scoring.true_counts(members)
  rounds = truth.reshape(-1, 2, truth.shape[1]).sum(1)
  profile = scoring.profile_metrics(members, cfg, {"exact": rounds}, members.participation)["exact"]
  split = scoring.member_metrics(members, cfg, {"exact": rounds})["exact"]
  np.testing.assert_array_equal(profile.lnacc, 1.0)
  assert np.nanmean(split.lnacc) < 0.9


def test_the_table_files_and_report_say_the_clients_are_dealt_every_round(redealt, tmp_path):
  from jaxleak.runs.leakage import leakage_table, result_files, write_leakage
  from jaxleak.runs.report import results as R
  from jaxleak.runs.report import tables as T
  table = leakage_table(redealt)
  assert "dealt anew every round" in table and "over rounds" in table and "| 4 clients |" in table
  assert "what all rounds tell of each client" in table
  files = result_files(redealt)
  assert files["profiles.csv"].splitlines()[0] == files["clients.csv"].splitlines()[0]
  assert len(files["profiles.csv"].splitlines()) == 1 + 4 * 2
  assert json.loads(files["manifest.json"])["config"]["cohort_dealing"] == "every_round"
  write_leakage(redealt, str(tmp_path / "agg"))
  (r,) = R.load(str(tmp_path)).har
  assert "secure aggregation of 2, dealt every round" in T.setting_label(r.settings)
  solved = float(np.nanmean(redealt.profile_metrics["ilrg"].lnacc))
  assert r.attacks["ilrg"]["profiles"]["lnacc"][0] == pytest.approx(solved, abs=1e-4)        # profiles.csv
  table = T.har_summary_table(R.load(str(tmp_path)), T.Accountant())
  row = dict(zip(table.columns, next(x for x in table.rows if x[table.columns.index("attack")] == "iLRG")))
  assert row["solved per-client LnAcc"] == r.attacks["ilrg"]["profiles"]["lnacc"][0]
  assert row["clients a round"] == "2, dealt every round" and "solved per-client (clients dealt anew" in table.note
  pytest.importorskip("matplotlib")
  from jaxleak.runs.report import figures as F
  assert F.attack_bars(r)[:4] == b"\x89PNG"        # bars per round, diamonds (1/K) and triangles (solved) per client
  from jaxleak.runs import report as RP
  (fig2,) = [f for f in RP.build(R.load(str(tmp_path))).figures if f.path.startswith("figures/fig2")]
  assert "bars are the mean over the rounds (clients dealt anew every round)" in fig2.caption
  assert "triangles: each client's label distribution solved from all rounds" in fig2.caption


def test_the_table_says_when_the_rounds_cannot_tell_the_clients_apart(redealt, tmp_path, monkeypatch):
  """Rounds that all hold the same clients (K = all of them, or cohorts kept) have a participation matrix of rank
  below the clients': the solved table then says the profiles are not identifiable (its minimum-norm answer is the
  even split), instead of scoring it as what the rounds tell."""
  from jaxleak.runs.leakage import leakage_table
  assert A.participation_rank(redealt.participation) == (4, 4)
  assert "solved from every round (least squares), against" in leakage_table(redealt)
  every = np.ones_like(redealt.participation)                        # every round holds all four clients
  assert A.participation_rank(every) == (1, 4)
  table = leakage_table(dataclasses.replace(redealt, participation=every))
  assert "NOT identifiable, the rounds' participation has rank 1 for 4 clients" in table
  from jaxleak.runs.leakage import write_leakage
  from jaxleak.runs.report import results as R
  from jaxleak.runs.report import tables as T
  for part, name, label in ((redealt.participation, "solvable", "2, dealt every round"),
                            (every, "all", "2, dealt every round (not identifiable)")):
    cohorts = tuple(tuple(int(s) for s in np.flatnonzero(row) + 1) for row in part)   # members as the manifest has
    write_leakage(dataclasses.replace(redealt, participation=part, cohorts=cohorts), str(tmp_path / name))
    (r,) = R.load(str(tmp_path / name)).har
    assert r.identifiable is (name == "solvable")
    table = T.har_summary_table(R.load(str(tmp_path / name)), T.Accountant())
    assert {row[table.columns.index("clients a round")] for row in table.rows} == {label}
    if name == "all" and importlib.util.find_spec("matplotlib"):       # Fig. 2's triangles say so too
      from jaxleak.runs.report import figures as F
      (tmp_path / "fig2.png").write_bytes(F.attack_bars(r))
      labels = []
      monkeypatch.setattr(F, "png", lambda fig: labels.extend(t.get_text() for t in fig.axes[0].get_legend().texts))
      F.attack_bars(r)
      assert "per client, solved from all rounds (not identifiable: the even split)" in labels
  kept = np.kron(np.ones((3, 1), bool), np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool))   # two cohorts dealt once
  assert A.participation_rank(kept) == (2, 4)
  assert A.participation_rank(np.array([[1, 0, 0], [1, 0, 0]])) == (1, 1)              # clients in no round: out
  with pytest.raises(ValueError, match=r"participation must be \[R, n\]"):
    A.participation_rank(np.ones(3))


def test_dealing_every_round_is_refused_without_aggregation(tmp_path, capsys):
  with pytest.raises(ValueError, match="cohort_dealing: unknown 'daily'; valid: once, every_round"):
    LeakageConfig(aggregate_clients=2, cohort_dealing="daily", **TINY).validate()
  with pytest.raises(ValueError, match="aggregate_clients=1 aggregates nothing; set aggregate_clients >= 2"):
    LeakageConfig(cohort_dealing="every_round", **TINY).validate()
  with pytest.raises(ValueError, match="aggregate_clients=5: the run has only 4 clients, so no round can gather 5"):
    prepare(LeakageConfig(aggregate_clients=5, cohort_dealing="every_round", **TINY), None, None, None)
  rc = cli.call(SS.main, SS.FLAGS, ["--dataset=synthetic_tiny", "--cohort_dealing=every_round",
                                    f"--output_dir={tmp_path}"])
  assert rc == 2 and "aggregate_clients >= 2" in capsys.readouterr().err
  rc = cli.call(SS.main, SS.FLAGS, ["--dataset=synthetic_tiny", "--cohort_dealing=weekly", f"--output_dir={tmp_path}"])
  assert rc == 2 and "--cohort_dealing" in capsys.readouterr().err
  assert not any(tmp_path.iterdir())


# --- in studies ---------------------------------------------------------------------------------------------------

def _sweep_inputs(updates=12, k=3, d=8, c=5):
  key = jax.random.key(0)
  grads = LastLayerGrads(kernel=0.1 * jax.random.normal(key, (updates, d, c)),
                         bias=0.1 * jax.random.normal(jax.random.key(1), (updates, c)))
  a = updates // k
  head = LastLayerParams(kernel=np.zeros((a, d, c), np.float32), bias=np.zeros((a, c), np.float32))
  star = {"wainakh": A.LLGStarParams(impact=np.full((a,), -0.01, np.float32), offsets=np.zeros((a, c), np.float32))}
  return grads, np.ones(updates, np.float32), jax.random.split(key, updates), jax.random.split(key, a), star, head


def test_the_swept_aggregates_are_the_mean_of_the_privatised_members_whatever_the_calls():
  from jaxleak.runs.study import engine
  grads, norms, noise_keys, attack_keys, star, head = _sweep_inputs()
  names, settings = ("ebi", "llg_star", "llbg"), [(0.0, 0.0), (0.05, 0.5), (0.1, 0.0)]
  run = lambda u: engine.sweep_settings(grads, norms, noise_keys, attack_keys, star, head, settings, names=names,
                                        num_samples=60, scope="all", updates_per_call=u, aggregate=3)
  whole = run(512)
  assert whole["ebi"].shape == (3, 4, 5) and np.all(whole["ebi"].sum(-1) == 60)
  for u in (1, 4, 5):                     # calls rounded up to whole aggregates (3, 6, 6 updates), last padded
    for n in names:
      np.testing.assert_array_equal(run(u)[n], whole[n], err_msg=f"{n}, {u} updates per call")
  # the first setting (no LDP) is the attack on the plain mean of each 3 consecutive updates
  mean = aggregation.mean_over_members(grads, 3)
  want = jax.vmap(lambda g: A.ebi(g, 60))(mean)
  np.testing.assert_array_equal(whole["ebi"][0], want)
  with pytest.raises(ValueError, match="not whole aggregates of 5"):
    engine.sweep_settings(grads, norms, noise_keys, attack_keys, star, head, settings, names=names,
                          num_samples=60, scope="all", aggregate=5)


def _count_passes(monkeypatch, engine) -> list:
  """The number of updates of every gradient pass the study engine makes from now on (appended as they run)."""
  passes = []
  for name in ("compute_updates", "compute_heads_and_norms"):
    real = getattr(engine, name)
    monkeypatch.setattr(engine, name, lambda prep, *a, _f=real, **kw: passes.append(len(prep.indices)) or _f(
        prep, *a, **kw))
  return passes


@pytest.mark.parametrize("ks", ["1,2", "2,3", "3"])
def test_aggregated_study_records_equal_separate_runs_and_other_keys_do_not_move(tmp_path, monkeypatch, ks):
  """The K of one setting are one group with one gradient pass (every update at K = 1; otherwise only those that
  reach an aggregate of one of its K: at K = 3 one of the 4 clients is in no cohort), and each K's records equal a
  separate run's."""
  from jaxleak.runs import study as S
  from jaxleak.runs.study import engine
  tiny = {"datasets": "synthetic_tiny", "models": "tinyhar", "states": "untrained", "samplings": "sequential",
          "attacks": "ebi,ilrg,llg_star,rlu", "ldp": "0:0,0.1:0.5"}
  plain = S.make_plan(S.override(S.preset("har_sampling"), {k: v for k, v in tiny.items() if k != "ldp"}),
                      check_inputs=False)
  st = S.override(S.preset("har_aggregation"), {**tiny, "aggregate_clients": ks})
  plan = S.make_plan(st)
  want_ks = [int(k) for k in ks.split(",")]
  assert sorted(t.config.get("aggregate_clients", 1) for t in plan.tasks) == sorted(want_ks * 2)
  assert len(plan.groups) == 1 and f"aggregated K={ks}" in plan.groups[0].label
  if ks == "1,2":
    alone_keys = {t.key for t in plan.tasks if "aggregate_clients" not in t.config and t.config["sigma"] == 0}
    assert alone_keys == {t.key for t in plain.tasks} and len(alone_keys) == 1   # K = 1: har_sampling's own key
    assert [t for t in plan.tasks if t.config.get("aggregate_clients") == 2][0].key not in {
        t.key for t in plain.tasks}
  passes = _count_passes(monkeypatch, engine)
  S.run_plan(plan, S.Store(str(tmp_path)), progress=None)
  cfgs = {k: dataclasses.replace(engine.leakage_config(plan.tasks[0].config), aggregate_clients=k) for k in want_ks}
  needed = {k: {(int(s), int(b)) for s, b in zip(p.subject_of_batch, p.batch_index)}
            for k, p in ((k, prepare(c, None, None, None)) for k, c in cfgs.items())}
  assert passes == [len(set().union(*needed.values()))]            # one pass, of what the K need, nothing more
  every = len(prepare(dataclasses.replace(cfgs[want_ks[0]], aggregate_clients=1), None, None, None).indices)
  assert (passes[0] < every) == (ks == "3")                       # K = 3 alone leaves a client out
  for task in plan.tasks:
    c = task.config
    cfg = engine.leakage_config(c, c["sigma"], c["tau"])
    assert cfg.aggregate_clients == c.get("aggregate_clients", 1)
    alone = run_leakage(cfg)
    rec = S.Store(str(tmp_path)).read(task.key)["results"]
    assert rec["subjects"] == list(alone.subject_ids)
    assert rec.get("cohorts") == (None if alone.cohorts is None else [list(x) for x in alone.cohorts])
    for attack in c["attacks"]:
      np.testing.assert_array_equal(rec["attacks"][attack]["clients"]["lnacc"], alone.client_metrics[attack].lnacc,
                                    err_msg=f"{c['sigma']}, {c.get('aggregate_clients')}, {attack}")
      if alone.member_metrics is None:
        assert "members" not in rec["attacks"][attack] and "member_subjects" not in rec
      else:
        assert rec["member_subjects"] == list(alone.member_ids)
        np.testing.assert_array_equal(rec["attacks"][attack]["members"]["clients"]["class_acc"],
                                      alone.member_metrics[attack].class_acc, err_msg=f"{c['sigma']}, {attack}")
  from jaxleak.runs.study import collect
  files, _ = collect.tables(plan, S.Store(str(tmp_path)))
  members = sum(len(S.Store(str(tmp_path)).read(t.key)["results"].get("member_subjects", [])) for t in plan.tasks)
  assert members == 2 * 4 * sum(k > 1 for k in want_ks)   # 2 LDP settings x 4 clients (NaN when in no cohort)
  assert len(files["members.csv"].splitlines()) == 1 + 4 * members   # x 4 attacks
  for row in csv.DictReader(files["summary.csv"].splitlines()):
    task = next(t for t in plan.tasks if t.key == row["task"])
    rec = S.Store(str(tmp_path)).read(task.key)["results"]["attacks"][row["attack"]]
    want = (rec.get("members") or rec)["summary"]["lnacc"][0]
    assert float(row["per_client_lnacc_mean"]) == pytest.approx(want, rel=1e-5)
    assert row["solved_per_client_lnacc_mean"] == row["solved_per_client_class_acc_std"] == ""   # dealt once
    assert row["solved_identifiable"] == ""


def task_row_dealing(task) -> str:
  from jaxleak.runs.study.plan import task_row
  return task_row(task)["cohort_dealing"]


def test_a_study_dealt_every_round_equals_separate_runs_from_one_pass_of_every_update(tmp_path, monkeypatch):
  """cohort_dealing=every_round in a study: the K > 1 tasks (and their group) say so, K = 1 keeps its key; one pass
  of every update (the rounds depend on all of them; LDP that clips the whole model: a full backward pass); each
  record equals a separate run's, profiles included."""
  from jaxleak.runs import study as S
  from jaxleak.runs.study import collect, cost, engine
  tiny = {"datasets": "synthetic_tiny", "models": "tinyhar", "states": "untrained", "samplings": "sequential",
          "attacks": "ebi,ilrg", "ldp": "0.1:0.5", "num_samples": "20",
          "dirichlet_alphas": "1"}                         # clients of 11, 12, 17 and 17 updates
  once = S.make_plan(S.override(S.preset("har_aggregation"), {**tiny, "aggregate_clients": "1,2,3"}))
  with_one = S.make_plan(S.override(S.preset("har_aggregation"), {**tiny, "aggregate_clients": "1,2,3",
                                                                   "cohort_dealing": "every_round"}))
  assert len(with_one.groups) == 1 and "aggregated K=1,2,3 dealt every round" in with_one.groups[0].label
  assert with_one.groups[0].key not in {g.key for g in once.groups}
  ones = {t.key for t in with_one.tasks if "aggregate_clients" not in t.config}
  assert len(ones) == 1 and ones == {t.key for t in once.tasks if "aggregate_clients" not in t.config}
  assert all(t.config["cohort_dealing"] == "every_round" for t in with_one.tasks if t.key not in ones)
  # Run without K = 1, whose pass alone would be every update: the dealing itself must make it so.
  plan = S.make_plan(S.override(S.preset("har_aggregation"), {**tiny, "aggregate_clients": "2,3",
                                                               "cohort_dealing": "every_round"}))
  assert {t.key for t in plan.tasks} < {t.key for t in with_one.tasks}
  passes = _count_passes(monkeypatch, engine)
  S.run_plan(plan, S.Store(str(tmp_path)), progress=None)
  every = prepare(engine.leakage_config(next(t for t in with_one.tasks if t.key in ones).config), None, None, None)
  assert passes == [len(every.indices)]
  # the dry run counts that pass: every update's 20 windows, a full backward (tau > 0 clips the whole model)
  assert cost.estimate_cost(plan)[plan.groups[0].key] == len(every.indices) * 20 * 3.0
  for task in plan.tasks:
    c = task.config
    cfg = engine.leakage_config(c, c["sigma"], c["tau"])
    assert cfg.cohort_dealing == "every_round"
    alone = run_leakage(cfg)
    rec = S.Store(str(tmp_path)).read(task.key)["results"]
    assert rec["cohorts"] == [list(x) for x in alone.cohorts]
    for attack in ("ebi", "ilrg"):
      got = rec["attacks"][attack]
      np.testing.assert_array_equal(got["clients"]["lnacc"], alone.client_metrics[attack].lnacc)
      np.testing.assert_array_equal(got["members"]["clients"]["lnacc"], alone.member_metrics[attack].lnacc)
      np.testing.assert_array_equal(got["profiles"]["clients"]["lnacc"], alone.profile_metrics[attack].lnacc)
  files, _ = collect.tables(plan, S.Store(str(tmp_path)))
  profiles = list(csv.DictReader(files["profiles.csv"].splitlines()))
  assert len(profiles) == 2 * 4 * 2 and {r["cohort_dealing"] for r in profiles} == {"every_round"}   # K x clients x
  for row in csv.DictReader(files["summary.csv"].splitlines()):        # the summary's solved columns: profiles.csv's
    mine = [float(p["lnacc"]) for p in profiles if (p["task"], p["attack"]) == (row["task"], row["attack"])]
    assert len(mine) == 4 and float(row["solved_per_client_lnacc_mean"]) == pytest.approx(np.mean(mine), abs=1e-5)
    assert row["solved_per_client_class_acc_std"] != "" and row["solved_identifiable"] == "True"
  from jaxleak.runs.report import results as R
  for r in R.load(str(tmp_path)).har:                                 # the report reads the records' profiles
    rec = S.Store(str(tmp_path)).read(r.source)["results"]["attacks"]["ilrg"]
    assert r.settings["cohort_dealing"] == "every_round"
    assert r.attacks["ilrg"]["profiles"]["lnacc"] == tuple(rec["profiles"]["summary"]["lnacc"])
  summary = S.make_plan(S.override(S.preset("har_sampling"), {k: v for k, v in tiny.items() if k != "ldp"}))
  assert task_row_dealing(summary.tasks[0]) == "once"                                           # attacks


@pytest.mark.parametrize("sets,message", [
    ({"cohort_dealing": "every_round"}, "cohort_dealing=every_round: read only by securely aggregated tasks"),
    ({"cohort_dealing": "hourly", "aggregate_clients": "2", "states": "untrained"},
     "cohort_dealing: unknown 'hourly'; valid: once, every_round"),
])
def test_studies_refuse_a_dealing_nothing_reads_or_an_unknown_one(sets, message):
  from jaxleak.runs import study as S
  with pytest.raises(ValueError, match=message):
    S.make_plan(S.override(S.preset("har_sampling"), {"datasets": "synthetic_tiny", **sets}), check_inputs=False)


def test_a_dealing_set_with_the_aggregation_that_reads_it_is_applied():
  # (the dealing was once dropped in silence: whether a part reads it depends on aggregate_clients set beside it)
  from jaxleak.runs import study as S
  plan = S.make_plan(S.override(S.preset("har_sampling"), {
      "datasets": "synthetic_tiny", "states": "untrained", "aggregate_clients": "1,2",
      "cohort_dealing": "every_round"}), check_inputs=False)
  assert {t.config.get("cohort_dealing") for t in plan.tasks} == {None, "every_round"}


def test_studies_refuse_impossible_aggregation_before_any_work(tmp_path):
  from jaxleak.runs import study as S
  tiny = {"datasets": "synthetic_tiny", "models": "tinyhar", "samplings": "shuffle"}
  with pytest.raises(ValueError, match="aggregate_clients=10 but the group attacks 4 clients"):
    S.make_plan(S.override(S.preset("har_aggregation"), tiny))
  with pytest.raises(ValueError, match="give distinct positive integers"):
    S.make_plan(S.override(S.preset("har_aggregation"), {**tiny, "aggregate_clients": "0,2"}), check_inputs=False)
  with pytest.raises(ValueError, match="states=trained"):
    S.make_plan(S.override(S.preset("har_aggregation"), {**tiny, "aggregate_clients": "2",
                                                         "states": "untrained,trained"}), check_inputs=False)
  with pytest.raises(ValueError, match="aggregate_clients"):
    S.make_plan(S.override(S.preset("har_aggregation"), {**tiny, "aggregate_clients": "2,x"}), check_inputs=False)


def test_the_dry_run_counts_the_one_pass_of_the_updates_the_aggregates_need():
  from jaxleak.runs import study as S
  from jaxleak.runs.study import cost, engine
  base = {"datasets": "synthetic_wetlab", "synthetic_scale": "0.1", "models": "tinyhar", "samplings": "balanced",
          "attacks": "ebi"}                          # balanced: clients with unequal updates, so the union is strict
  counted = {}
  for ks in ("1,3", "3", "2,3", "3,4"):
    plan = S.make_plan(S.override(S.preset("har_aggregation"), {**base, "aggregate_clients": ks}))
    (group,) = plan.groups
    cfg = engine.leakage_config(group.tasks[0].config)
    counted[ks] = cost.estimate_cost(plan)[group.key] / cfg.num_samples
  updates = {}
  for k in (1, 2, 3, 4):
    prep = prepare(dataclasses.replace(cfg, aggregate_clients=k), None, None, None)
    updates[k] = {(int(s), int(b)) for s, b in zip(prep.subject_of_batch, prep.batch_index)}
  assert counted["1,3"] == len(updates[1])
  assert counted["3"] == len(updates[3]) < len(updates[1])                      # 69 of 80 on this data
  assert counted["2,3"] == len(updates[2] | updates[3])
  assert counted["3,4"] == len(updates[3] | updates[4]) > max(len(updates[3]), len(updates[4]))   # 71 > 69, 64


def test_fedavg_rounds_aggregate_the_members_multi_step_updates():
  from jaxleak.federated import LocalSteps
  base = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=60, minmax=False, attacks=("ebi", "llbg"),
                       local=LocalSteps(steps=3, batch_size=20, lr=1e-3))
  r = run_leakage(dataclasses.replace(base, aggregate_clients=2))
  assert r.cohorts is not None and np.all(r.true_counts.sum(1) == 120)
  for pred in r.pred_counts.values():
    assert np.all(pred.sum(1) == 120)
  prep = prepare(dataclasses.replace(base, aggregate_clients=2), None, None, None)
  members = compute_updates(prep, base, base.ldp, None)
  _, mean, _ = aggregation.aggregate(prep, members)
  np.testing.assert_allclose(mean.bias, (members.bias[0::2] + members.bias[1::2]) / 2, rtol=1e-6, atol=1e-9)
  assert set(r.member_metrics) == {"ebi", "llbg"}


def test_a_multi_step_study_shares_one_pass_among_its_k_and_equals_separate_runs(tmp_path, monkeypatch):
  from jaxleak.runs import study as S
  from jaxleak.runs.study import engine
  st = S.override(S.preset("har_aggregation"), {
      "datasets": "synthetic_tiny", "models": "tinyhar", "samplings": "shuffle", "attacks": "ebi,llbg",
      "multi_step": "60:20:3", "aggregate_clients": "1,2"})
  plan = S.make_plan(st)
  assert len(plan.groups) == 1 and len(plan.tasks) == 2
  passes = []
  real = engine.compute_updates
  monkeypatch.setattr(engine, "compute_updates", lambda prep, *a: passes.append(len(prep.indices)) or real(prep, *a))
  S.run_plan(plan, S.Store(str(tmp_path)), progress=None)
  assert len(passes) == 1
  for task in plan.tasks:
    alone = run_leakage(engine.leakage_config(task.config))
    rec = S.Store(str(tmp_path)).read(task.key)["results"]
    assert rec.get("cohorts") == (None if alone.cohorts is None else [list(x) for x in alone.cohorts])
    for attack in ("ebi", "llbg"):
      np.testing.assert_array_equal(rec["attacks"][attack]["clients"]["lnacc"], alone.client_metrics[attack].lnacc)
