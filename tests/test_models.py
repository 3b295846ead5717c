"""Models: parameter counts of the paper, the time-only convolution, heads without bias."""
import jax
import numpy as np
import pytest
from flax import linen as nn

from jaxleak import models
from jaxleak.models.layers import TorchLSTM, batch_to_channels, channels_to_batch


@pytest.mark.parametrize("name,channels,classes,expected", [
    ("deepconvlstm", 12, 19, 705_747), ("deepconvlstm", 3, 9, 409_545),
    ("tinyhar", 12, 19, 36_001), ("tinyhar", 3, 9, 28_391)])
def test_parameter_counts_match_the_paper(name, channels, classes, expected):
  variables = models.init(models.build(name, classes), jax.random.key(0), 50, channels)
  assert models.num_params(variables["params"]) == expected


def test_head_without_bias():
  v = models.init(models.build("deepconvlstm", 9, head_bias=False), jax.random.key(0), 50, 3)
  head = models.head_params(v["params"])
  assert head.bias is None and head.kernel.shape == (128, 9)
  # Found 2026-12-04 (thirteenth session): the whole variables (a common slip) or a tree without a head gave
  # KeyError: 'head'.
  with pytest.raises(ValueError, match=r"top level: \['params'\]\); pass variables\['params'\], not the whole"):
    models.head_params(v)
  with pytest.raises(ValueError, match="must be a Dense named 'head'"):
    models.head_params({"dense": {"kernel": 1}})


def test_unknown_model_lists_valid_names():
  with pytest.raises(ValueError, match="cnn, deepconvlstm, mlp, tinyhar"):
    models.build("resnet", 9)


@pytest.mark.parametrize("call, message", [
    (lambda: models.build("tinyhar", 1), "num_classes must be an integer >= 2"),          # was: built, C = 1
    (lambda: models.build("deepconvlstm", 2.5), r"num_classes must be an integer >= 2 .*got 2.5"),
    (lambda: models.build("tinyhar", 5, filter=8), r"tinyhar: unknown setting\(s\) filter; it takes: filters, "),
    (lambda: models.init(models.build("deepconvlstm", 5), jax.random.key(0), 50, 0),    # was: ZeroDivisionError
     r"example_shape must be positive integers.*got \(50, 0\)"),
    # Found 2026-12-04 (fourteenth session): each of these was built (dropout 1.5 keeps a negative fraction in
    # training; head_bias='no' is true) or failed in Flax's words (an int key).
    (lambda: models.build("tinyhar", 5, dropout=1.5), r"tinyhar: dropout must be a rate in \[0, 1\), got 1.5"),
    (lambda: models.build("mlp", 10, dropout=-0.1), r"mlp: dropout must be a rate in \[0, 1\)"),
    (lambda: models.build("deepconvlstm", 5, head_bias="no"), r"head_bias must be True or False, got 'no'"),
    (lambda: models.build("deepconvlstm", 5, lstm_units=0), r"lstm_units must be a positive integer, got 0"),
    (lambda: models.build("cnn", 10, features=(10, 2.5)), r"features must be a non-empty tuple of positive integ"),
    (lambda: models.init(models.build("tinyhar", 5), 0, 50, 3), r"init_for_shape: key must be one JAX PRNG key"),
])
def test_build_and_init_refuse_impossible_settings_by_name(call, message):
  with pytest.raises((ValueError, TypeError), match=message):
    call()


def test_time_only_conv_equals_the_2d_kernel_9x1_conv():
  x = jax.random.normal(jax.random.key(0), (3, 50, 4))
  conv1d = nn.Conv(5, (9,), padding="VALID")
  v = conv1d.init(jax.random.key(1), channels_to_batch(x))
  ours = batch_to_channels(conv1d.apply(v, channels_to_batch(x)), 3)
  kernel2d = v["params"]["kernel"][:, None]                                # (9, 1, 1, 5)
  ref = jax.lax.conv_general_dilated(x[..., None], kernel2d, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + v["params"]["bias"]
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_torch_lstm_matches_a_hand_written_step():
  lstm = TorchLSTM(3)
  x = jax.random.normal(jax.random.key(0), (2, 4, 5))
  v = lstm.init(jax.random.key(1), x)
  p = v["params"]
  h = c = np.zeros((2, 3))
  sig = lambda z: 1 / (1 + np.exp(-z))
  for t in range(4):
    gates = np.asarray(x[:, t]) @ p["w_ih"] + p["b_ih"] + h @ p["w_hh"] + p["b_hh"]
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = sig(f) * c + sig(i) * np.tanh(g)
    h = sig(o) * np.tanh(c)
  np.testing.assert_allclose(lstm.apply(v, x)[:, -1], h, atol=1e-5)


def test_xavier_normal_init_std_of_the_head():
  v = models.init(models.build("deepconvlstm", 19), jax.random.key(0), 50, 12)
  k = np.asarray(v["params"]["head"]["kernel"])
  assert abs(k.std() - np.sqrt(2 / (128 + 19))) < 0.01
  assert np.all(np.asarray(v["params"]["head"]["bias"]) == 0)


def test_tinyhar_train_mode_uses_batch_statistics_and_dropout():
  m = models.build("tinyhar", 9)
  v = models.init(m, jax.random.key(0), 50, 3)
  x = jax.random.normal(jax.random.key(1), (8, 50, 3)) * 5 + 3
  out, updates = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
  assert out.shape == (8, 9)
  before = jax.tree.leaves(v["batch_stats"]); after = jax.tree.leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))        # running stats were updated
  eval_out = m.apply(v, x, train=False)
  assert not np.allclose(out, eval_out)


def test_models_initialise_and_run_with_x64_enabled():
  """jax_enable_x64 makes Flax's default parameters float64; the LSTM carry must follow (it used to be float32).
  TinyHAR's TorchLSTM is the same layer DeepConvLSTM stacks."""
  import subprocess
  import sys
  code = ("import jax; jax.config.update('jax_enable_x64', True); import jax.numpy as jnp; from jaxleak import models\n"
          "for n in ('tinyhar',):\n"
          "  m = models.build(n, 4); v = models.init(m, jax.random.key(0), 50, 3)\n"
          "  out = m.apply(v, jnp.ones((2, 50, 3)), train=False); assert out.shape == (2, 4), out.shape\n"
          "print('ok')")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                     env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


@pytest.mark.parametrize("name, shortest", [("tinyhar", 49), ("deepconvlstm", 33)])
def test_windows_shorter_than_the_receptive_field_are_refused(name, shortest):
  # One step shorter and the last VALID conv has no output: features would be empty sums (TinyHAR: all zero)
  # or clamped reads, i.e. plausible-looking numbers from nothing.
  model = models.build(name, 3)
  v = models.init(model, jax.random.key(0), shortest, 3)
  _, feats = model.apply(v, jax.random.normal(jax.random.key(1), (2, shortest, 3)), return_features=True)
  assert np.all(np.isfinite(feats)) and np.any(feats != 0)
  with pytest.raises(ValueError, match=f"{shortest - 1} time steps .* at least {shortest}"):
    models.init(model, jax.random.key(0), shortest - 1, 3)
