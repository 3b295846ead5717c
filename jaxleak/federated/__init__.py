"""Federated updates: what a client sends, computed for many batches/clients at once."""
from jaxleak.federated.single_step import METHODS, batch_grad_fn, last_layer_grads, minmax_scale

__all__ = ["METHODS", "batch_grad_fn", "last_layer_grads", "minmax_scale"]
