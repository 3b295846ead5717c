"""Orchestration: experiments as library calls. Each subpackage turns a frozen config into results, using the
pure layers (data, models, federated, privacy, attacks, metrics) and jaxleak.storage for every durable file.

  leakage/         the HAR paper's label-leakage runs (single and multi step, LDP, trained folds)
  fold_training    LOSO training of the global models the trained setting attacks
  eavesdrop/       the Eavesdrop paper's federations, rounds, Whole Determination and reports
"""
