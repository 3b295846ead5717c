"""jaxleak: measuring label leakage in federated learning, in JAX."""
from jaxleak.types import LastLayerGrads, LastLayerParams

__version__ = "0.1.0"
__all__ = ["LastLayerGrads", "LastLayerParams", "__version__"]
