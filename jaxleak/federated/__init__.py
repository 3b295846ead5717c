"""Federated updates: what a client sends, computed for many batches/clients at once; FedAvg rounds with
secure aggregation (the Eavesdrop setting)."""
from jaxleak.federated.multi_step import (EQUIVALENTS, PAPER_SETTINGS, LocalTraining, client_update_fn,
                                          client_updates)
from jaxleak.federated.rounds import (LocalSGD, compress_update, fedavg_round, local_train_fn,
                                      per_label_updates, select_participants)
from jaxleak.federated.training import Folds, FoldState, TrainConfig, fold_variables, train_folds
from jaxleak.federated.single_step import (METHODS, LdpConfig, apply_batch_ldp, batch_grad_fn,
                                           head_grads_and_model_norms, last_layer_grads, minmax_scale)

__all__ = ["LocalSGD", "compress_update", "fedavg_round", "local_train_fn", "per_label_updates",
           "select_participants", "FoldState", "Folds", "TrainConfig", "fold_variables", "train_folds", "EQUIVALENTS", "LocalTraining", "PAPER_SETTINGS", "client_update_fn", "client_updates", "LdpConfig", "METHODS", "apply_batch_ldp", "head_grads_and_model_norms", "batch_grad_fn", "last_layer_grads", "minmax_scale"]
