"""How much does secure aggregation hide? The HAR paper's future work ("how multi-client aggregation impacts label
leakage"), measured: the same clients' updates attacked alone (K = 1) and as the server sees them when each round
aggregates K clients (`--aggregate_clients=K` of the drivers; jaxleak/runs/leakage/aggregation.py).

Per sampling, every client update is computed once; each K then deals the clients into cohorts of K and attacks
the mean updates of the cohorts' rounds (K N windows each), exactly as `single_step_leakage.py
--aggregate_clients=K` would (the members' updates are the same: tests/test_aggregation.py). Prints per K the
cohorts, the aggregates, and per attack LnAcc and ClassAcc (mean over cohorts; over clients for K = 1).

A second table asks what the server learns about each client (the runs' `member_metrics`, the drivers' second
table): every member of an aggregate is guessed to hold 1/K of the aggregate's predicted counts (re-rounded to N by
largest remainder), scored against the member's own update (LnAcc / ClassAcc, mean over clients). Beside it, the
guess of an attacker who sees no update at all: N split by the run's own label shares (every client alike).

A third table asks what a server that deals the cohorts anew every round (as FedAvg's client selection does;
`aggregation.redealt_rounds`, seeded with --redeal_seed) learns of each client's label distribution: it attacks
each round's mean update as before, then solves for every client's profile by least squares over all rounds
(`attacks.disaggregate_rounds`); beside it, the sum of 1/K of the client's rounds, and the label shares. Each is
scored against the client's own distribution (its aggregated updates' counts summed, scaled to N).

  python benchmarks/aggregation.py                                   # HAPT, untrained DeepConvLSTM, N = 100
  python benchmarks/aggregation.py --clients_per_round=1,2,5 --samplings=sequential --noise=0.1 --clip=1
  python benchmarks/aggregation.py --local_steps=5 --local_batch_size=20      # FedAvg rounds: S local steps each
  python benchmarks/aggregation.py --dirichlet_alpha=0.3 --clients_per_round=1,2,5,10  # non-IID clients
"""
import dataclasses
import time

import _flags
import jax
import numpy as np
from absl import flags

import jaxleak.attacks as A
from jaxleak import metrics as M
from jaxleak.federated import LocalSteps
from jaxleak.runs.leakage import LeakageConfig, ldp_setting
from jaxleak.runs.leakage.prepare import prepare
from jaxleak.runs.leakage import aggregation
from jaxleak.runs.leakage.scoring import (attack_and_score, attack_inputs, local_hyperparameters, member_metrics,
                                          run_attacks, true_counts)
from jaxleak.runs.leakage.updates import compute_updates
from jaxleak.runs.tables import format_table

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "hapt", "HAR dataset.")
flags.DEFINE_string("model", "deepconvlstm", "Model (untrained: one global model for all clients).")
flags.DEFINE_list("samplings", ["shuffle", "sequential"], "Samplings to compare.")
flags.DEFINE_list("clients_per_round", ["1", "2", "5", "10", "30"], "K values: clients per aggregated round.")
flags.DEFINE_integer("num_samples", 100, "N, windows per client update.", lower_bound=1)
flags.DEFINE_integer("num_clients", None, "Only the first k subjects.", lower_bound=1)
flags.DEFINE_float("noise", 0.0, "Each client's LDP noise std sigma (0 = none), added before the aggregation.",
                   lower_bound=0.0)
flags.DEFINE_float("clip", 0.0, "Each client's LDP clip norm tau over the whole model (0 = none).", lower_bound=0.0)
flags.DEFINE_integer("local_steps", 0, "S local SGD steps per update (0: single step).", lower_bound=0)
flags.DEFINE_integer("local_batch_size", 20, "B windows per local step (with --local_steps).", lower_bound=1)
flags.DEFINE_float("local_lr", 1e-4, "Local learning rate (with --local_steps).", lower_bound=0.0)
flags.DEFINE_float("dirichlet_alpha", None, "Re-deal the subjects' windows to non-IID clients ~ Dir(alpha) (default: "
                   "the subjects as they are).", lower_bound=1e-6)
flags.DEFINE_integer("redeal_seed", 0, "Seed of the cohorts dealt anew every round (the third table).", lower_bound=0)


def cell(cm) -> str:
  """'LnAcc / ClassAcc' in %, each the mean over clients (or cohorts) of a metrics.ClientMetrics."""
  return f"{100 * np.nanmean(cm.lnacc):5.1f} / {100 * np.nanmean(cm.class_acc):5.1f}"


def share_of_pairs_alike(groups: np.ndarray, labels: np.ndarray) -> float:
  """Of all pairs of updates in one group (same value in `groups`), the share whose majority labels are equal."""
  alike = pairs = 0
  for g in np.unique(groups):
    counts = np.bincount(labels[groups == g])
    alike += int(np.sum(counts * (counts - 1) // 2))
    pairs += int(counts.sum() * (counts.sum() - 1) // 2)
  return alike / max(pairs, 1)


def redealt(prep, cfg, grads, k: int, attacks, truth: np.ndarray) -> dict:
  """The third table's cells for one K. The clients are dealt anew every round (`aggregation.redealt_rounds`),
  each round's mean update is attacked, and each client's label distribution is read two ways: least squares over
  all rounds ('solved', `attacks.disaggregate_rounds`) and the sum of 1/K of each of its rounds ('split'); both
  are scored against the client's own distribution (its updates' counts summed, scaled to N), LnAcc / ClassAcc
  mean over clients; 'shares': the run's label shares for every client. Also the rounds and the rank of their
  participation matrix."""
  n, num_samples = prep.clients.num_clients, cfg.num_samples
  assert np.all(np.diff(prep.batch_client) >= 0), "a client's updates must be consecutive"
  rows, part = aggregation.redealt_rounds(prep.batch_client, n, k, FLAGS.redeal_seed)
  a = len(part)
  view = dataclasses.replace(prep, indices=prep.indices[rows].reshape(a, k * num_samples),
                             batch_client=np.arange(a), batch_index=np.zeros(a, np.int32),
                             dropout_keys=prep.dropout_keys[rows][::k], class_weights=None,
                             unit_ids=tuple(range(a)))
  keys, star, head = attack_inputs(view, cfg, k * num_samples)
  means = aggregation.mean_over_members(jax.tree.map(lambda x: x[rows], grads), k)
  b, s = local_hyperparameters(cfg)
  preds = run_attacks(means, k * num_samples, attacks, keys=keys, star_params=star, head=head, local_batch_size=b,
                      local_steps=s)
  owner = prep.batch_client[rows]
  per_client = lambda per_update: aggregation.client_profiles(per_update, owner, n, num_samples)  # summed, to N
  mine = per_client(truth[rows])
  score = lambda guess: cell(jax.tree.map(np.asarray, M.client_metrics(mine, guess, np.arange(n), n)))
  out = {"rounds": a, "rank": A.participation_rank(part)[0],
         "shares": score(aggregation.client_profiles(np.repeat(truth[rows].sum(0)[None], n, axis=0), np.arange(n),
                                                     n, num_samples))}
  for name in attacks:
    solved = np.asarray(A.disaggregate_rounds(preds[name], part, num_samples))
    split = per_client(aggregation.split_among_members(preds[name], k, num_samples))
    out[name] = f"{score(solved)} | {score(split)}"
  return out


def main(_):
  ks = _flags.numbers("clients_per_round")
  ldp = ldp_setting(FLAGS.noise, FLAGS.clip)
  local = None
  if FLAGS.local_steps:
    if not ldp.is_identity:
      raise ValueError("--noise/--clip are the single-step clients' LDP; with --local_steps drop them.")
    local = LocalSteps(steps=FLAGS.local_steps, batch_size=FLAGS.local_batch_size, lr=FLAGS.local_lr)
  rows, member_rows, redealt_rows, attacks = [], [], [], None
  for sampling in FLAGS.samplings:
    alone = LeakageConfig(dataset=FLAGS.dataset, model=FLAGS.model, sampling=sampling, num_samples=FLAGS.num_samples,
                          num_clients=FLAGS.num_clients, ldp=ldp, local=local, minmax=local is None,
                          dirichlet_alpha=FLAGS.dirichlet_alpha)
    configs = {k: dataclasses.replace(alone, aggregate_clients=k) for k in ks}
    for cfg in configs.values():                   # every K refused or accepted before the gradient pass
      cfg.validate()
    t0 = time.perf_counter()
    prep = prepare(alone, None, None, None)
    for cfg in configs.values():
      if cfg.aggregate_clients > prep.clients.num_clients:
        raise ValueError(f"--clients_per_round: {cfg.aggregate_clients} is more than the run's "
                         f"{prep.clients.num_clients} clients.")
    grads = compute_updates(prep, alone, ldp, None)
    where = {(int(s), int(b)): i for i, (s, b) in enumerate(zip(prep.subject_of_batch, prep.batch_index))}
    print(f"{sampling}: {len(prep.indices)} client updates in {time.perf_counter() - t0:.1f} s", flush=True)
    majority = np.asarray(M.counts_from_labels(prep.clients.labels[prep.indices], prep.dataset.num_classes)).argmax(1)
    print(f"  two clients' r-th updates share their majority label in "
          f"{100 * share_of_pairs_alike(prep.batch_index, majority):.1f} % of pairs; any two updates in "
          f"{100 * share_of_pairs_alike(np.zeros_like(majority), majority):.1f} %", flush=True)
    for k, cfg in configs.items():
      agg = prepare(cfg, prep.dataset, None, None)
      rows_k = np.asarray([where[(int(s), int(b))] for s, b in zip(agg.subject_of_batch, agg.batch_index)])
      r = attack_and_score(agg, cfg, jax.tree.map(lambda a: a[rows_k], grads), {})
      attacks = r.config.attacks
      row = {"sampling": sampling, "K": k, "windows": k * FLAGS.num_samples,
             "cohorts": len(r.subject_ids), "updates": len(r.batch_client)}          # K = 1: the clients
      member = dict(row)
      for a in attacks:
        row[a] = cell(r.client_metrics[a])
        member[a] = cell(r.client_metrics[a] if r.member_metrics is None else r.member_metrics[a])
      shares = np.repeat(r.true_counts.sum(0)[None].astype(np.int32), len(r.batch_client), axis=0)
      member["label shares"] = cell(member_metrics(agg, cfg, {"shares": shares})["shares"])
      rows.append(row)
      member_rows.append(member)
      if k > 1:
        redealt_rows.append({"sampling": sampling, "K": k, "windows": k * FLAGS.num_samples,
                             **redealt(prep, cfg, grads, k, attacks, true_counts(prep))})
  print()
  print(format_table(rows, ["sampling", "K", "windows", "cohorts", "updates"] + list(attacks),
                     f"{FLAGS.dataset} | {FLAGS.model} untrained | N={FLAGS.num_samples} per client"
                     + (f" | Dirichlet({FLAGS.dirichlet_alpha:g}) clients" if FLAGS.dirichlet_alpha else "")
                     + (f" | LDP sigma={FLAGS.noise:g} tau={FLAGS.clip:g} per client" if not ldp.is_identity else "")
                     + (f" | FedAvg S={FLAGS.local_steps} B={FLAGS.local_batch_size} lr={FLAGS.local_lr:g}"
                        if local else "")
                     + " | LnAcc / ClassAcc (%), mean over cohorts of K clients (K = 1: over clients)"))
  print()
  print(format_table(member_rows, ["sampling", "K", "windows", "cohorts", "updates"] + list(attacks)
                     + ["label shares"],
                     "What the server learns about each client: 1/K of its aggregate's counts against the client's "
                     "own update; LnAcc / ClassAcc (%), mean over clients; 'label shares': N split by the run's "
                     "label shares, no update seen"))
  if redealt_rows:
    print()
    print(format_table(redealt_rows, ["sampling", "K", "windows", "rounds", "rank"] + list(attacks) + ["shares"],
                       "Cohorts dealt anew every round, what the server learns of each client's label "
                       "distribution: solved by least squares over all rounds | the sum of 1/K of its rounds; "
                       "LnAcc / ClassAcc (%) against the client's own, mean over clients; 'shares': the run's "
                       "label shares for every client; 'rank': of the rounds' participation matrix (full = the "
                       "number of clients)"))


if __name__ == "__main__":
  _flags.run(main)
