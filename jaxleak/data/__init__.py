"""Data: HAR datasets (HAPT, WEAR/Wetlab files, synthetic), windows, clients and samplers; labelled pools and
the Eavesdrop allocations (digits, or HAR windows)."""
import os

from jaxleak.data.dataset import HarDataset, Recording, WindowedClients
from jaxleak.data.digits import load_digits
from jaxleak.data.mnist import load_mnist
from jaxleak.data.hapt import load_hapt
from jaxleak.data.label_pools import (Allocation, LabelPool, allocate_dirichlet, allocate_label_totals,
                                      allocate_main_labels, pad_allocation,
                                      aux_per_label, quantity_groups, split_pool)
from jaxleak.data.samplers import (STRATEGIES, check_client_sizes, sample_client, sample_clients,
                                   sample_queries, usable_windows)
from jaxleak.data.synthetic import PRESETS as SYNTHETIC_PRESETS, SyntheticPreset, make_synthetic
from jaxleak.data.tal import DataFormatError, load_tal
from jaxleak.data.watch import load_watch
from jaxleak.data.windows import (clients_holding, make_clients, repartition_dirichlet, window_recording,
                                  window_starts)

SYNTHETIC_DATASETS = tuple(f"synthetic_{p}" for p in SYNTHETIC_PRESETS)   # the ones --synthetic_scale applies to
DATASETS = ("hapt", "watch", "wear", "wetlab", "tal") + SYNTHETIC_DATASETS
FILE_DATASETS = ("wear", "wetlab", "tal")          # read from --data_dir in the TAL layout (see jaxleak.data.tal)


def load(name: str, *, data_dir: str | None = None, scale: float = 1.0, seed: int = 0) -> HarDataset:
  """Loads a dataset by name: 'hapt'; 'watch' (seglearn's balanced smartwatch set, extra `watch`); 'wear'/'wetlab'
  (the papers' data) or 'tal' (any data in their layout, named 'tal:<folder>'), each from data_dir; or
  'synthetic_{wear,wetlab,tiny}'.

  'tal' is for your own recordings: lay them out as WEAR/Wetlab are (jaxleak.data.tal). Under 'wear' or 'wetlab'
  they would be reported beside the paper's numbers for those datasets.
  """
  if name == "hapt":
    return load_hapt()
  if name == "watch":
    return load_watch()
  if name in FILE_DATASETS:
    if not data_dir:
      instead = ("lay your recordings out as jaxleak.data.tal describes" if name == "tal"
                 else "try --dataset=synthetic_" + name + " instead")
      raise ValueError(f"dataset {name!r} needs --data_dir (in a study: --set data_dir=...) pointing at the folder "
                       f"holding raw/ and annotations/ (the files are not downloadable here); {instead}.")
    if name == "tal":        # your own data: named after its folder, marked so no report takes it for the papers'
      name = "tal:" + os.path.basename(os.path.normpath(data_dir))
    return load_tal(data_dir, name)
  if name.startswith("synthetic_"):
    return make_synthetic(name[len("synthetic_"):], scale=scale, seed=seed)
  raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}.")


POOL_DATASETS = ("digits", "mnist") + DATASETS


def load_pool(name: str, *, data_dir: str | None = None, scale: float = 1.0, seed: int = 0) -> LabelPool:
  """Every example of a dataset as one LabelPool: 'digits' (8x8 images), 'mnist' (5,000 real 28x28 MNIST
  digits, extra `mnist`) or any HAR dataset (all windows of all subjects, f32[n, 50, channels]; subject identity
  is dropped, the Eavesdrop allocation re-deals them)."""
  if name == "digits":
    return load_digits()
  if name == "mnist":
    return load_mnist()
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(POOL_DATASETS)}.")
  windows = make_clients(load(name, data_dir=data_dir, scale=scale, seed=seed))
  return LabelPool(x=windows.windows, y=windows.labels, num_classes=windows.num_classes, name=name)


__all__ = ["Allocation", "DATASETS", "DataFormatError", "FILE_DATASETS", "HarDataset", "LabelPool", "POOL_DATASETS",
           "Recording", "STRATEGIES", "SYNTHETIC_DATASETS", "SYNTHETIC_PRESETS", "SyntheticPreset",
           "WindowedClients", "allocate_dirichlet", "allocate_label_totals", "allocate_main_labels", "aux_per_label",
           "check_client_sizes", "load", "load_digits", "load_hapt", "load_mnist", "load_pool", "load_tal",
           "clients_holding", "load_watch",
           "make_clients", "make_synthetic", "pad_allocation", "quantity_groups", "repartition_dirichlet",
           "sample_client", "sample_clients", "sample_queries", "split_pool", "usable_windows", "window_recording",
           "window_starts"]
