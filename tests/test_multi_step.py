"""Multi-step (FedAvg) updates: S = 1 equals single step, equivalents, parameter-delta path, queries, driver."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import multi_step_leakage as MS
from jaxleak import cli
from jaxleak import data as D
from jaxleak import models
from jaxleak.federated import LdpConfig, LocalSteps, client_update_fn, client_updates, last_layer_grads
from jaxleak.runs.leakage import LeakageConfig, ldp_setting, run_leakage



def _setup(name="tinyhar", k=3, n=40, c=5):
  model = models.build(name, c)
  v = models.init(model, jax.random.key(0), 50, 3)
  x = jax.random.normal(jax.random.key(1), (k, n, 50, 3))
  y = jax.random.randint(jax.random.key(2), (k, n), 0, c)
  return model, v, x, y, jax.random.split(jax.random.key(3), k)


@pytest.mark.parametrize("name", ["tinyhar", "deepconvlstm"])
def test_one_local_step_equals_the_single_step_gradient(name):
  model, v, x, y, keys = _setup(name)
  ms = client_updates(model, v, x, y, keys, local=LocalSteps(steps=1, batch_size=40))
  step_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)            # step s uses fold_in(key, s)
  ss = last_layer_grads(model, v, x, y, step_keys, minmax=False, method="autodiff")   # jax.grad, not the closed form
  np.testing.assert_allclose(ms.kernel, ss.kernel, atol=1e-6)
  np.testing.assert_allclose(ms.bias, ss.bias, atol=1e-6)


def _plain_local_sgd(model, variables, x, y, key, local, class_weights=None):
  """Independent reference: S SGD steps, each jax.grad of the whole model (as the HAR code's optimiser.step());
  returns (theta_0 - theta_S) / (lr S) of the head, read off the parameters. With class_weights f32[C], each step's
  loss is sum_n w[y_n] CE_n / sum_n w[y_n], written out here."""
  from jaxleak.federated.apply import train_loss

  def weighted(logits, labels):
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]
    return jnp.sum(class_weights[labels] * ce) / jnp.sum(class_weights[labels])
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  for s in range(local.steps):
    idx = (s * local.batch_size + np.arange(local.batch_size)) % len(y)
    loss = train_loss(model, state, x[idx], y[idx], jax.random.fold_in(key, s),
                      None if class_weights is None else weighted)
    g, state = jax.grad(loss, has_aux=True)(params)
    params = jax.tree.map(lambda p, d: p - local.lr * d, params, g)
  head0, head = variables["params"]["head"], params["head"]
  return {k: (head0[k] - head[k]) / (local.lr * local.steps) for k in head}


@pytest.mark.parametrize("name, delta", [("tinyhar", True), ("deepconvlstm", False)])   # TinyHAR: BatchNorm state
def test_local_steps_equal_plain_sgd_on_the_whole_model(name, delta):
  # An independent reference (parameters read off after plain SGD steps); lr large enough that the steps move the
  # features, so a step taken at the wrong parameters shows.
  model, v, x, y, keys = _setup(name)
  local = LocalSteps(steps=3, batch_size=15, lr=0.3, via_parameter_delta=delta)
  ours = client_updates(model, v, x, y, keys, local=local)
  ref = jax.jit(jax.vmap(lambda x, y, k: _plain_local_sgd(model, v, x, y, k, local)))(x, y, keys)
  np.testing.assert_allclose(ours.kernel, ref["kernel"], atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(ours.bias, ref["bias"], atol=2e-5, rtol=1e-4)
  one_step = client_updates(model, v, x, y, keys, local=LocalSteps(steps=1, batch_size=15))
  assert not np.allclose(ours.bias, one_step.bias, atol=1e-3)          # the steps moved the model


@pytest.mark.parametrize("blocks", [False, True])
def test_class_weighted_local_steps_equal_plain_sgd_on_the_weighted_loss(blocks, monkeypatch):
  from jaxleak.federated import multi_step
  if blocks:                                   # S = 3 as host-driven blocks of 2 and 1 steps
    monkeypatch.setattr(multi_step, "UNROLLED_STEPS", 2)
    monkeypatch.setattr(multi_step, "STEPS_PER_BLOCK", 2)
  model, v, x, y, keys = _setup("tinyhar")
  w = jnp.array([[0.5, 3.0, 1.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0], [2.0, 0.2, 1.0, 4.0, 1.0]])
  local = LocalSteps(steps=3, batch_size=15, lr=0.3 + 0.01 * blocks)
  ours = client_updates(model, v, x, y, keys, local=local, class_weights=w)
  ref = jax.jit(jax.vmap(lambda x, y, k, c: _plain_local_sgd(model, v, x, y, k, local, c)))(x, y, keys, w)
  np.testing.assert_allclose(ours.bias, ref["bias"], atol=2e-5, rtol=1e-4)         # one compilation, 3 clients
  np.testing.assert_allclose(ours.kernel, ref["kernel"], atol=2e-5, rtol=1e-4)
  plain = client_updates(model, v, x, y, keys, local=local)
  np.testing.assert_allclose(ours.bias[1], plain.bias[1], atol=1e-6)     # equal weights: the mean loss
  assert not np.allclose(ours.bias[0], plain.bias[0], atol=1e-4)
  with pytest.raises(ValueError, match=r"client_updates: class_weights must be \[K, C\] = \(3, 5\)"):
    client_updates(model, v, x, y, keys, local=local, class_weights=w[0])


@pytest.mark.parametrize("name", ["tinyhar", "deepconvlstm"])
def test_many_local_steps_run_in_blocks_from_the_host_and_equal_plain_sgd(name, monkeypatch):
  # Beyond UNROLLED_STEPS the steps run as host-driven calls of a block of steps (S = 200 unrolled compiled for
  # more than 5 minutes). Made small here: blocks of 2 beyond 2 steps, so S = 5 is blocks of 2, 2 and 1 steps.
  from jaxleak.federated import multi_step
  monkeypatch.setattr(multi_step, "UNROLLED_STEPS", 2)
  monkeypatch.setattr(multi_step, "STEPS_PER_BLOCK", 2)
  model, v, x, y, keys = _setup(name)
  local = LocalSteps(steps=5, batch_size=15, lr=0.29)          # an lr of its own: a fresh trace, not a cached one
  ours = client_updates(model, v, x, y, keys, local=local)
  ref = jax.jit(jax.vmap(lambda x, y, k: _plain_local_sgd(model, v, x, y, k, local)))(x, y, keys)
  np.testing.assert_allclose(ours.kernel, ref["kernel"], atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(ours.bias, ref["bias"], atol=2e-5, rtol=1e-4)


def test_host_driven_blocks_report_their_steps_and_reporting_changes_no_bit(monkeypatch):
  # A call of S in the hundreds runs for minutes: between its blocks it says how far it is (at most every
  # PROGRESS_EVERY_S seconds; 0 here, so after every block but the last). Made small: blocks of 2 beyond 2 steps.
  from jaxleak.federated import multi_step
  monkeypatch.setattr(multi_step, "UNROLLED_STEPS", 2)
  monkeypatch.setattr(multi_step, "STEPS_PER_BLOCK", 2)
  monkeypatch.setattr(multi_step, "PROGRESS_EVERY_S", 0.0)
  model, v, x, y, keys = _setup("mlp")
  local = LocalSteps(steps=5, batch_size=15, lr=0.31)
  lines = []
  told = client_updates(model, v, x, y, keys, local=local, progress=lines.append)
  assert [line.split(" (")[0] for line in lines] == [
      f"local training: step {s}/5 of this call's {keys.shape[0]} updates" for s in (2, 4)]
  silent = client_updates(model, v, x, y, keys, local=local)
  np.testing.assert_array_equal(told.kernel, silent.kernel)
  np.testing.assert_array_equal(told.bias, silent.bias)
  lines.clear()
  client_updates(model, v, x, y, keys, local=LocalSteps(steps=2, batch_size=15, lr=0.31), progress=lines.append)
  assert lines == []                                  # unrolled in one program: nothing between steps to report


def test_a_multi_step_run_passes_its_progress_into_the_blocks(monkeypatch):
  from jaxleak.federated import multi_step
  monkeypatch.setattr(multi_step, "UNROLLED_STEPS", 2)
  monkeypatch.setattr(multi_step, "STEPS_PER_BLOCK", 2)
  monkeypatch.setattr(multi_step, "PROGRESS_EVERY_S", 0.0)
  cfg = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=20, num_clients=1, attacks=("ebi",),
                      local=LocalSteps(steps=3, batch_size=10))
  lines = []
  run_leakage(cfg, progress=lines.append)
  assert any(line.startswith("local training: step 2/3 of this call's") for line in lines), lines


def test_sum_equivalent_is_s_times_the_mean_and_differs_from_one_step():
  model, v, x, y, keys = _setup("mlp")          # model-agnostic machinery: the fast model
  mean = client_updates(model, v, x, y, keys, local=LocalSteps(steps=4, batch_size=10, lr=0.5))
  total = client_updates(model, v, x, y, keys, local=LocalSteps(steps=4, batch_size=10, lr=0.5, equivalent="sum"))
  np.testing.assert_allclose(total.bias, 4 * mean.bias, rtol=1e-5, atol=1e-7)
  one = client_updates(model, v, x, y, keys, local=LocalSteps(steps=1, batch_size=40))
  assert not np.allclose(mean.bias, one.bias, atol=1e-4)                     # the iterates moved (lr 0.5)


def test_parameter_delta_path_matches_accumulation_up_to_float32_quantisation():
  model, v, x, y, keys = _setup("mlp")          # model-agnostic machinery: the fast model
  local = LocalSteps(steps=3, batch_size=20, lr=1e-2)
  acc = client_updates(model, v, x, y, keys, local=local)
  delta = client_updates(model, v, x, y, keys, local=dataclasses.replace(local, via_parameter_delta=True))
  np.testing.assert_allclose(delta.bias, acc.bias, atol=1e-4)


def test_vmapped_queries_equal_one_at_a_time():
  model, v, x, y, keys = _setup()
  local = LocalSteps(steps=2, batch_size=20)
  batched = client_updates(model, v, x, y, keys, local=local)
  f = jax.jit(client_update_fn(model, local))
  for i in range(3):
    np.testing.assert_allclose(batched.bias[i], f(v, x[i], y[i], keys[i]).bias, atol=1e-7)


def test_per_step_ldp_is_deterministic_and_changes_the_update():
  model, v, x, y, keys = _setup("mlp")          # model-agnostic machinery: the fast model
  local = LocalSteps(steps=2, batch_size=20, ldp=LdpConfig(clip_norm=0.5, noise_std=0.05))
  a = client_updates(model, v, x, y, keys, local=local)
  b = client_updates(model, v, x, y, keys, local=local)
  plain = client_updates(model, v, x, y, keys, local=dataclasses.replace(local, ldp=LdpConfig()))
  np.testing.assert_array_equal(a.bias, b.bias)
  assert not np.allclose(a.bias, plain.bias, atol=1e-3)


def test_queries_follow_the_reference():
  labels = np.array([0] * 60 + [1] * 45 + [2] * 20, np.int32)              # n = 125
  seq = D.sample_queries("sequential", jax.random.key(0), labels, 50)
  np.testing.assert_array_equal(seq, np.arange(100).reshape(2, 50))
  shuf = D.sample_queries("shuffle", jax.random.key(0), labels, 50)
  assert shuf.shape == (2, 50) and all(len(np.unique(q)) == 50 for q in shuf)
  assert not np.array_equal(shuf[0], shuf[1])
  bal = D.sample_queries("balanced", jax.random.key(0), labels, 50)
  assert bal.shape == (2, 50) and bal.max() < 125


def test_untrained_mean_equivalent_keeps_ilrg_uniform_exact_where_the_sum_breaks_it():
  cfg = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=100, minmax=False,
                         num_clients=2, attacks=("ilrg_uniform", "ebi"),
                         local=LocalSteps(steps=5, batch_size=20))
  mean = run_leakage(cfg)
  total = run_leakage(dataclasses.replace(cfg, local=dataclasses.replace(cfg.local, equivalent="sum")))
  ln = lambda r, a: float(np.nanmean(r.client_metrics[a].lnacc))
  assert ln(mean, "ilrg_uniform") > 0.95 and ln(total, "ilrg_uniform") < 0.8
  np.testing.assert_array_equal(mean.pred_counts["ebi"], total.pred_counts["ebi"])   # scale-invariant


def test_bad_local_settings():
  with pytest.raises(ValueError, match="positive"):
    LocalSteps(steps=0)
  with pytest.raises(ValueError, match="gradient equivalent"):
    LocalSteps(equivalent="median")
  with pytest.raises(ValueError, match="per local step"):
    LeakageConfig(local=LocalSteps(), ldp=ldp_setting(0.1, 0.0)).validate()
  # Found 2026-12-04 (fourteenth session): the library took B > N (the runs refused it) and stepped on batches
  # that wrapped around, each window counted twice.
  model, v, x, y, keys = _setup(k=1, n=10)
  with pytest.raises(ValueError, match="local batch size B=20 is larger than the update's N=10 windows"):
    client_updates(model, v, x, y, keys, local=LocalSteps(steps=1, batch_size=20, lr=0.1))


def test_multi_step_cli(tmp_path, capsys):
  rc = cli.call(MS.main, MS.FLAGS, ["--dataset=synthetic_tiny", "--model=tinyhar", "--num_samples=100",
                                    "--local_batch_size=50", "--local_steps=2", "--attacks=ebi,ilrg", "--num_clients=1",
                                    f"--output_dir={tmp_path}"])
  proc = capsys.readouterr()
  assert rc == 0, proc.err[-2000:]
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["experiment"] == "multi_step_leakage"
  assert manifest["config"]["local"]["steps"] == 2 and manifest["config"]["minmax"] is False
  assert "multi-step B=50 S=2" in proc.out


def test_multi_step_cli_with_class_weighted_clients_equals_the_library(tmp_path, capsys):
  args = ["--dataset=synthetic_tiny", "--model=tinyhar", "--num_samples=100", "--local_batch_size=50",
          "--local_steps=2", "--attacks=ebi", "--num_clients=2", "--client_loss=class_weighted"]
  rc = cli.call(MS.main, MS.FLAGS, args + [f"--output_dir={tmp_path}"])
  proc = capsys.readouterr()
  assert rc == 0, proc.err[-2000:]
  assert "| class-weighted client loss | multi-step B=50 S=2" in proc.out
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  cfg = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=100, attacks=("ebi",), num_clients=2,
                      minmax=False, local=LocalSteps(steps=2, batch_size=50), client_loss="class_weighted")
  assert manifest["config"]["client_loss"] == "class_weighted"
  lib = run_leakage(cfg)
  mean = run_leakage(dataclasses.replace(cfg, client_loss="mean"))
  clients = (tmp_path / "clients.csv").read_text().splitlines()[1:]
  assert [float(line.split(",")[3]) for line in clients] == [round(float(v), 4) for v in
                                                               lib.client_metrics["ebi"].lnacc]
  assert not np.array_equal(lib.pred_counts["ebi"], mean.pred_counts["ebi"])     # the weights reached the steps


def test_local_steps_whose_window_indices_pass_int32_are_refused():
  """Found 2026-12-05 (eighteenth session): `--local_steps=1099511627776` ran without end (host-driven blocks whose
  int32 step index would overflow); S x B past 2**31 - 1 would wrap step s's window indices sB + i."""
  LocalSteps(steps=2 ** 31 // 100, batch_size=100)                     # 2,147,483,600 <= 2**31 - 1
  with pytest.raises(ValueError, match="local steps x batch size = 21,474,837 x 100: at most 2,147,483,647"):
    LocalSteps(steps=2 ** 31 // 100 + 1, batch_size=100)
