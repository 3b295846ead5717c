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
  class NoFeatures:
    pass
  models.register("_test_only_model", NoFeatures, uses=("eavesdrop",))
  try:
    with pytest.raises(ValueError, match="'_test_only_model' does not support leakage; models that do: cnn"):
      models.require("_test_only_model", "leakage")
    assert models.require("_test_only_model", "eavesdrop").cls is NoFeatures
  finally:
    models._REGISTRY.pop("_test_only_model")
  with pytest.raises(ValueError, match="unknown model 'nope'; valid: cnn, deepconvlstm, mlp, tinyhar"):
    models.build("nope", 3)
