"""WEAR / Wetlab in the TAL-repository layout used by the HAR paper (spec 5.2).

  {data_dir}/raw/inertial/sbj_{k}.csv        column 0 subject id, sensor columns, last column `label`
                                             (activity name; empty, NaN or "null" = NULL)
  {data_dir}/annotations/loso_sbj_{i}.json   {"label_dict": {name: id without NULL}, "database":
                                              {"sbj_k": {"subset": "Training" | "Validation", ...}}}

Class list = ["null"] + label_dict names ordered by id, so NULL = 0. Missing sensor values become 0 (as the
reference fills NaN with 0). Read with the csv module: no pandas needed.
"""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import re

import numpy as np

from jaxleak.data.dataset import HarDataset, Recording

_NULL_NAMES = {"", "null", "nan", "none"}


class DataFormatError(ValueError):
  """A WEAR/Wetlab file is malformed; the message names the file and the problem."""


def _read_label_dict(annotation_files):
  label_dict = None
  for path in annotation_files:
    try:
      with open(path) as f:
        ann = json.load(f)
    except json.JSONDecodeError as e:
      raise DataFormatError(f"{path}: not valid JSON ({e}).") from None
    if "label_dict" not in ann or "database" not in ann:
      raise DataFormatError(f"{path}: missing key 'label_dict' or 'database' (TAL annotation format).")
    if label_dict is None:
      label_dict = ann["label_dict"]
    elif ann["label_dict"] != label_dict:
      raise DataFormatError(f"{path}: label_dict differs from {annotation_files[0]}.")
  ids = sorted(label_dict.values())
  if ids != list(range(len(ids))):
    raise DataFormatError(f"{annotation_files[0]}: label_dict ids must be 0..{len(ids) - 1}, got {ids}.")
  return label_dict


def _validation_subjects(annotation_files):
  out = {}
  for path in annotation_files:
    split = int(re.search(r"loso_sbj_(\d+)\.json$", path).group(1))
    with open(path) as f:
      db = json.load(f)["database"]
    held = [k for k, v in db.items() if v.get("subset") == "Validation"]
    if len(held) != 1:
      raise DataFormatError(f"{path}: expected exactly one 'Validation' subject, found {held}.")
    out[split] = int(held[0].split("_")[-1])
  return out


def _read_subject_csv(path, class_ids):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise DataFormatError(f"{path}: empty file (no header).")
  header = [h.strip() for h in rows[0]]
  if len(header) < 3 or header[-1] != "label":
    raise DataFormatError(f"{path}: header must be subject id, sensor columns, 'label'; got {header} "
                          "(missing 'label' column?).")
  body = rows[1:]
  if not body:
    raise DataFormatError(f"{path}: subject has no rows.")
  n_sensor = len(header) - 2
  signals = np.zeros((len(body), n_sensor), np.float32)
  labels = np.zeros((len(body),), np.int32)
  for r, row in enumerate(body):
    if len(row) != len(header):
      raise DataFormatError(f"{path}: line {r + 2} has {len(row)} fields, the header has {len(header)}.")
    for c, v in enumerate(row[1:-1]):
      try:
        x = float(v) if v.strip() else 0.0
      except ValueError:
        raise DataFormatError(f"{path}: line {r + 2}, column {header[c + 1]!r}: {v!r} is not a number.") from None
      signals[r, c] = 0.0 if math.isnan(x) else x
    name = row[-1].strip()
    if name.lower() in _NULL_NAMES:
      continue
    if name not in class_ids:
      raise DataFormatError(f"{path}: line {r + 2}: unknown label {name!r}; known: {sorted(class_ids)}.")
    labels[r] = class_ids[name]
  return header[1:-1], signals, labels


def load_tal(data_dir: str, name: str | None = None) -> HarDataset:
  """Loads a WEAR/Wetlab-style directory (see module docstring) as a HarDataset."""
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data directory {data_dir!r} does not exist. Point --data_dir at the folder "
                            "holding raw/inertial/ and annotations/ (WEAR/Wetlab from the authors' share).")
  csvs = sorted(glob.glob(os.path.join(data_dir, "raw", "inertial", "sbj_*.csv")))
  anns = sorted(glob.glob(os.path.join(data_dir, "annotations", "loso_sbj_*.json")))
  if not csvs:
    raise FileNotFoundError(f"{data_dir}: no raw/inertial/sbj_*.csv files.")
  if not anns:
    raise FileNotFoundError(f"{data_dir}: no annotations/loso_sbj_*.json files (needed for the label list).")
  label_dict = _read_label_dict(anns)
  names = sorted(label_dict, key=label_dict.get)
  class_ids = {n: i + 1 for i, n in enumerate(names)}
  subjects, channels = {}, None
  for path in csvs:
    sbj = int(re.search(r"sbj_(\d+)\.csv$", path).group(1))
    cols, signals, labels = _read_subject_csv(path, class_ids)
    if channels is None:
      channels = tuple(cols)
    elif tuple(cols) != channels:
      raise DataFormatError(f"{path}: sensor columns {cols} differ from the other subjects' {list(channels)}.")
    subjects[sbj] = [Recording(signals=signals, labels=labels)]
  validation = _validation_subjects(anns)
  missing = sorted(set(validation.values()) - set(subjects))
  if missing:
    raise DataFormatError(f"{data_dir}: annotations hold out subjects {missing} that have no CSV file.")
  return HarDataset(name=name or os.path.basename(os.path.normpath(data_dir)), class_names=("null",) + tuple(names),
                    channel_names=channels, subjects=subjects, loso_validation=validation)
