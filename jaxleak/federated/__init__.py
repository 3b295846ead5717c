"""Federated updates as pure functions: what a client sends, computed for many updates/clients at once.

  apply        the one train-mode model application and its losses
  single_step  last-layer gradients of single-step (FedSGD) updates, optionally with LDP
  multi_step   S local SGD steps (LocalSteps) -> the gradient-equivalent the attacks read
  rlu          RLU's per-label basis at a model, over a simulated local training
  rounds       FedAvg rounds with secure aggregation and local epochs (LocalEpochs; the Eavesdrop setting)
"""
from jaxleak.federated.apply import (CLIENT_LOSSES, apply_train, balanced_class_weights, class_weighted_ce,
                                     masked_class_weighted_ce, masked_mean_ce, mean_ce, split_variables, train_loss)
from jaxleak.federated.multi_step import EQUIVALENTS, LocalSteps, client_update_fn, client_updates
from jaxleak.federated.rounds import (EXECUTIONS, LocalEpochs, client_execution, client_upload, compress_update,
                                      fedavg_round, fedavg_round_replicated, local_train_fn, per_label_updates,
                                      per_label_updates_replicated, run_fedavg_round, run_per_label_updates,
                                      select_participants)
from jaxleak.federated.rlu import simulate_rlu_basis
from jaxleak.federated.single_step import (METHODS, PerformanceWarning, apply_batch_ldp, batch_grad_fn,
                                           head_grads_and_model_norms, last_layer_grads, minmax_scale)
from jaxleak.privacy import LdpConfig

__all__ = ["CLIENT_LOSSES", "EQUIVALENTS", "EXECUTIONS", "client_execution", "client_upload", "run_fedavg_round",
           "run_per_label_updates", "LdpConfig", "LocalEpochs", "LocalSteps", "METHODS", "PerformanceWarning",
           "apply_batch_ldp", "apply_train", "balanced_class_weights",
           "batch_grad_fn", "class_weighted_ce", "client_update_fn", "client_updates", "compress_update",
           "fedavg_round", "fedavg_round_replicated", "head_grads_and_model_norms", "last_layer_grads",
           "local_train_fn", "masked_class_weighted_ce", "masked_mean_ce", "mean_ce", "minmax_scale",
           "per_label_updates", "per_label_updates_replicated", "select_participants", "simulate_rlu_basis",
           "split_variables", "train_loss"]
