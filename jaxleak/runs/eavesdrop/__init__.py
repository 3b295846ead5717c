"""The Eavesdrop paper's experiments: config -> federation -> rounds (Class Sniffing, Quantity Inference) or Whole
Determination trials -> summaries, result folders and tables."""
from jaxleak.runs.eavesdrop.config import (DIRICHLET_ALPHAS, PAPER_COMPRESSION, PAPER_LOCAL, PAPER_SWEEPS,
                                           PAPER_WD_FACTORS, PARTITIONS, WD_STAGE_NAMES, EavesdropConfig,
                                           WholeDeterminationConfig)
from jaxleak.runs.eavesdrop.federation import (Federation, RoundInputs, accuracy, load_pools, play_round,
                                               play_training_round, round_inputs, round_randomness, setup,
                                               setup_replicates)
from jaxleak.runs.eavesdrop.report import (per_label_table, round_rows, rounds_files, summarize_rounds,
                                           summarize_whole_determination, sweep_table, whole_determination_table,
                                           write_rounds, write_whole_determination)
from jaxleak.runs.eavesdrop.rounds import (ATTACKER_COLUMNS, ROUND_COLUMNS, RoundsResult, attack_round,
                                           attack_round_jit,
                                           attack_round_replicated, checkpoint_config, pool_results, run_rounds,
                                           run_rounds_replicated)
from jaxleak.runs.eavesdrop.whole_determination import WholeDeterminationTrial, run_whole_determination

__all__ = ["ATTACKER_COLUMNS", "DIRICHLET_ALPHAS", "PARTITIONS", "EavesdropConfig", "Federation",
           "PAPER_COMPRESSION", "PAPER_LOCAL", "PAPER_SWEEPS", "PAPER_WD_FACTORS",
           "ROUND_COLUMNS", "RoundInputs", "RoundsResult", "WD_STAGE_NAMES", "WholeDeterminationConfig",
           "WholeDeterminationTrial", "accuracy", "attack_round", "attack_round_jit", "attack_round_replicated",
           "checkpoint_config", "load_pools", "per_label_table", "play_round", "play_training_round",
           "pool_results", "round_inputs", "round_randomness", "round_rows", "rounds_files", "run_rounds",
           "run_rounds_replicated", "run_whole_determination", "setup", "setup_replicates", "summarize_rounds",
           "summarize_whole_determination", "sweep_table", "whole_determination_table", "write_rounds",
           "write_whole_determination"]
