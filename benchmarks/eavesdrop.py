"""Seconds per Eavesdrop round, and the vmapped round against the same clients trained one after another.

  python benchmarks/eavesdrop.py [--dataset mnist] [--model mlp] [--participants 100,1000] [--rounds 5] [--replicates 4]

A round = selection, K = P * N_p clients' local training (L_ep = 3 epochs, L_bs = 64, lr 0.01) in one vmapped
computation with secure aggregation, the attacker's per-label training (10 labels, vmapped) and both attacks.
Baseline, measured in the same run on the same data and keys: the K clients trained one by one with the same
jitted single-client function (what a per-client loop, as in the PyTorch original, does). Then R independent
federations (seeds 0..R-1): all vmapped in one computation per round vs the same R run one after another.
"""
import time

import jax
import jax.numpy as jnp
import _flags
from absl import flags

from jaxleak.runs import eavesdrop as EV
from jaxleak.federated.rounds import local_train_fn

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist", "mnist (optional extra `mnist`) or digits (scikit-learn's 8x8)")
flags.DEFINE_string("model", "mlp", "mlp or cnn")
flags.DEFINE_list("participants", ["100", "1000"], "N_p values (P = 0.1)")
flags.DEFINE_integer("rounds", 5, "timed rounds (after one compiling round)", lower_bound=1)
flags.DEFINE_integer("replicates", 4, "R federations (N_p = 100) run vmapped together vs one after another",
                     lower_bound=1)


def time_rounds(fed, rounds):
  v = fed.variables
  k, nl = float(fed.config.num_selected), fed.config.labels_per_client
  def one(t, v):
    v2, g, u, _ = EV.play_round(fed, v, t)
    out = EV.attack_round_jit(g, u, k, nl, 0.5, 0.5, 0.25)
    jax.block_until_ready((v2, out))
    return v2
  t0 = time.perf_counter(); v = one(0, v); compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for t in range(1, rounds + 1):
    v = one(t, v)
  return compile_s, (time.perf_counter() - t0) / rounds


def time_loop(fed, rounds):
  """The same clients' local training, one jitted call per client."""
  cfg = fed.config
  train = jax.jit(local_train_fn(fed.model, cfg.local))
  v = fed.variables
  def one(t):
    r = EV.round_inputs(fed, t)
    outs = [train(v, fed.pool_x[idx], fed.pool_y[idx], jnp.asarray(m), k_)
            for idx, m, k_ in zip(r.index, r.mask, r.client_keys)]
    jax.block_until_ready(outs)
  one(0)
  t0 = time.perf_counter()
  for t in range(1, rounds + 1):
    one(t)
  return (time.perf_counter() - t0) / rounds


def time_vmapped_training_only(fed, rounds):
  v = fed.variables
  def one(t):
    jax.block_until_ready(EV.play_training_round(fed, v, t))
  one(0)
  t0 = time.perf_counter()
  for t in range(1, rounds + 1):
    one(t)
  return (time.perf_counter() - t0) / rounds


def main(_):
  print(f"devices: {jax.devices()}")
  for n in _flags.numbers("participants"):
    cfg = EV.EavesdropConfig(dataset=FLAGS.dataset, model=FLAGS.model, num_participants=n, rounds=FLAGS.rounds)
    fed = EV.setup(cfg)
    compile_s, per_round = time_rounds(fed, FLAGS.rounds)
    train_vmapped = time_vmapped_training_only(fed, FLAGS.rounds)
    train_loop = time_loop(fed, FLAGS.rounds)
    print(f"{FLAGS.dataset} {FLAGS.model} N_p={n} K={cfg.num_selected} width={fed.allocation.width}: full round "
          f"{per_round:.3f} s (first round incl. compile {compile_s:.1f} s); client training: vmapped "
          f"{train_vmapped:.3f} s vs one-by-one {train_loop:.3f} s -> {train_loop / train_vmapped:.1f}x")
  if FLAGS.replicates > 1:
    time_replicates(FLAGS.replicates, FLAGS.rounds)


def time_replicates(r_count, rounds):
  cfg = EV.EavesdropConfig(dataset=FLAGS.dataset, model=FLAGS.model, rounds=rounds + 1)
  feds = EV.setup_replicates(cfg, r_count)
  together = EV.run_rounds_replicated(feds)[0].seconds_per_round
  one_by_one = sum(EV.run_rounds(f).seconds_per_round for f in feds)
  print(f"{FLAGS.dataset} {FLAGS.model} {r_count} federations of N_p=100: vmapped together {together:.3f} s per round "
        f"vs one after another {one_by_one:.3f} s -> {one_by_one / together:.1f}x")


if __name__ == "__main__":
  _flags.run(main)
