"""Every registered model passes the HeadModel contract; unsupported uses are refused by name."""
import pytest

from jaxleak import models

SHAPES = {"deepconvlstm": (50, 3), "tinyhar": (50, 3), "mlp": (8, 8), "cnn": (8, 8)}


@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("head_bias", [True, False])
def test_registered_model_follows_the_head_model_interface(name, head_bias):
  assert name in SHAPES, f"add an example input shape for the new model {name!r}"
  kwargs = {"filters": 4} if name == "tinyhar" else {}
  models.check_head_model(models.build(name, 5, head_bias=head_bias, **kwargs), SHAPES[name])


def test_mnist_models_also_take_har_windows():
  for name in ("mlp", "cnn"):
    models.check_head_model(models.build(name, 4), (50, 3))


def test_unsupported_use_is_refused_with_the_model_named():
  import flax.linen as nn

  class NoFeatures(nn.Module):                               # registered for one use only
    num_classes: int
  models.register("_test_only_model", NoFeatures, uses=("eavesdrop",))
  try:
    with pytest.raises(ValueError, match="'_test_only_model' does not support leakage; models that do: cnn"):
      models.require("_test_only_model", "leakage")
    assert models.require("_test_only_model", "eavesdrop").cls is NoFeatures
  finally:
    models._REGISTRY.pop("_test_only_model")
  with pytest.raises(ValueError, match="unknown model 'nope'; valid: cnn, deepconvlstm, mlp, tinyhar"):
    models.build("nope", 3)


def _module(body):
  """A small HeadModel-like Flax module whose __call__ is `body(self, x, train, return_features)`."""
  import flax.linen as nn

  class M(nn.Module):
    num_classes: int
    head_bias: bool = True

    @nn.compact
    def __call__(self, x, *, train=False, return_features=False):
      return body(self, x, return_features)
  return M


def _dense_body(features_of, head_name="head"):
  import flax.linen as nn

  def body(self, x, return_features):
    h = nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))
    logits = nn.Dense(self.num_classes, name=head_name)(h)
    return (logits, features_of(x, h)) if return_features else logits
  return body


def test_the_contract_check_names_the_clause_a_model_breaks():
  # Before: a __call__ without train= ended in Python's "unexpected keyword argument", features of the wrong shape
  # in chex's "input 0 has shape (3, 50, 3) but expected (3, 16)".
  import flax.linen as nn

  class NoKeywords(nn.Module):
    num_classes: int
    head_bias: bool = True

    @nn.compact
    def __call__(self, x):
      return nn.Dense(self.num_classes, name="head")(x.reshape(x.shape[0], -1))

  class NoHeadBias(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, *, train=False, return_features=False):
      return nn.Dense(self.num_classes, name="head")(x.reshape(x.shape[0], -1))

  cases = [(NoKeywords, "__call__ must take the keyword arguments train= and return_features="),
           (NoHeadBias, "no field 'head_bias'"),
           (_module(_dense_body(lambda x, h: x)), r"features of shape \(3, 50, 3\); they must be the head's input"),
           (_module(_dense_body(lambda x, h: h, head_name="out")), "no top-level Dense named 'head'")]
  for cls, message in cases:
    with pytest.raises(AssertionError, match=message):
      models.check_head_model(cls(num_classes=4), example_shape=(50, 3))
  models.check_head_model(_module(_dense_body(lambda x, h: h))(num_classes=4), example_shape=(50, 3))


def test_register_refuses_names_classes_and_uses_it_cannot_keep(monkeypatch):
  monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
  good = _module(_dense_body(lambda x, h: h))
  for name in ("", "my model", 3):
    with pytest.raises(ValueError, match="give a non-empty name of letters, digits"):
      models.register(name, good, uses=("leakage",))
  for cls in (3, good(num_classes=4), dict):                 # not a class / an instance / not a Module
    with pytest.raises(TypeError, match="cls must be a Flax linen Module class"):
      models.register("mine", cls, uses=("leakage",))
  assert models.register("mine", good, uses="eavesdrop").uses == ("eavesdrop",)    # one use as a string
  with pytest.raises(ValueError, match=r"unknown uses \['foo'\]"):
    models.register("mine2", good, uses=("foo",))
