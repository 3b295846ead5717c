"""HAR data: datasets (HAPT, WEAR/Wetlab files, synthetic), windows, clients and samplers."""
from jaxleak.data.dataset import HarDataset, Recording, WindowedClients
from jaxleak.data.hapt import load_hapt
from jaxleak.data.samplers import STRATEGIES, sample_client, sample_clients, sample_queries
from jaxleak.data.synthetic import PRESETS as SYNTHETIC_PRESETS, make_synthetic
from jaxleak.data.tal import DataFormatError, load_tal
from jaxleak.data.windows import make_clients, window_recording, window_starts

DATASETS = ("hapt", "wear", "wetlab") + tuple(f"synthetic_{p}" for p in SYNTHETIC_PRESETS)


def load(name: str, *, data_dir: str | None = None, scale: float = 1.0, seed: int = 0) -> HarDataset:
  """Loads a dataset by name: 'hapt', 'wear'/'wetlab' (needs data_dir), or 'synthetic_{wear,wetlab,tiny}'."""
  if name == "hapt":
    return load_hapt()
  if name in ("wear", "wetlab"):
    if not data_dir:
      raise ValueError(f"dataset {name!r} needs --data_dir pointing at its raw/ and annotations/ folders "
                       "(the files are not downloadable here); try --dataset=synthetic_" + name + " instead.")
    return load_tal(data_dir, name)
  if name.startswith("synthetic_"):
    return make_synthetic(name[len("synthetic_"):], scale=scale, seed=seed)
  raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}.")


__all__ = ["DATASETS", "DataFormatError", "HarDataset", "Recording", "STRATEGIES", "SYNTHETIC_PRESETS",
           "WindowedClients", "load", "load_hapt", "load_tal", "make_clients", "make_synthetic",
           "sample_client", "sample_clients", "sample_queries", "window_recording", "window_starts"]
