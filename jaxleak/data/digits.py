"""scikit-learn's shipped 8x8 digits (1,797 images, 10 classes): the stand-in for the Eavesdrop paper's MNIST.

The images ship inside the scikit-learn wheel (no download). Pixel values 0..16 are scaled to [0, 1].
"""
from __future__ import annotations

import numpy as np

from jaxleak.data.label_pools import LabelPool


def load_digits() -> LabelPool:
  """LabelPool with x f32[1797, 8, 8] in [0, 1] and y i32[1797]."""
  try:
    from sklearn.datasets import load_digits as _sk_load_digits
  except ImportError as e:
    raise ImportError("the digits dataset needs scikit-learn: pip install -e '.[digits]' "
                      "(or pip install scikit-learn).") from e
  d = _sk_load_digits()
  return LabelPool(x=(np.asarray(d.images, np.float32) / 16.0), y=np.asarray(d.target, np.int32),
                   num_classes=10, name="digits")
