"""The HAR paper's label-leakage experiment: config -> prepare -> client updates -> attacks -> metrics -> files."""
from jaxleak.runs.leakage.config import PAPER_LDP_GRID, LeakageConfig, ldp_setting, paper_ldp_settings
from jaxleak.runs.leakage.prepare import batch_keys, select_clients
from jaxleak.runs.leakage.report import leakage_table, result_files, write_leakage, write_runs
from jaxleak.runs.leakage.run import run_ldp_sweep, run_leakage
from jaxleak.runs.leakage.scoring import LeakageResult, run_attacks

__all__ = ["PAPER_LDP_GRID", "LeakageConfig", "LeakageResult", "batch_keys", "ldp_setting", "leakage_table",
           "paper_ldp_settings", "result_files", "run_attacks", "run_ldp_sweep", "run_leakage", "select_clients",
           "write_runs", "write_leakage"]
