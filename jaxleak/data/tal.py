"""WEAR / Wetlab in the TAL-repository layout used by the HAR paper (spec 5.2).

  {data_dir}/raw/inertial/sbj_{k}.csv        column 0 subject id, sensor columns, last column `label`
                                             (activity name; empty, NaN or "null" = NULL)
  {data_dir}/annotations/loso_sbj_{i}.json   {"label_dict": {name: id without NULL}, "database":
                                              {"sbj_k": {"subset": "Training" | "Validation", ...}}}

Class list = ["null"] + label_dict names ordered by id, so NULL = 0. Missing sensor values (empty or NaN) become
0, as the reference fills NaN with 0; an infinite value is refused (file and line named), since it would make every
update of that subject non-finite. Read with the csv module: no pandas needed. Files are checked before reading:
regular files only (not a folder or a FIFO), at most MAX_CSV_BYTES / MAX_JSON_BYTES, UTF-8, one CSV per subject
named sbj_<integer>.csv.
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
MAX_CSV_BYTES = 8 * 2 ** 30          # WEAR's largest subject file is well under 1 GiB
MAX_JSON_BYTES = 64 * 2 ** 20
_SUBJECT_CSV = re.compile(r"sbj_(\d+)\.csv$")
_ANNOTATION = re.compile(r"loso_sbj_(\d+)\.json$")


class DataFormatError(ValueError):
  """A WEAR/Wetlab file is malformed; the message names the file and the problem."""


def _check_file(path: str, max_bytes: int) -> None:
  """A regular file of at most max_bytes, else DataFormatError naming it (checked before opening: a FIFO would
  block, a folder would raise, a huge file would exhaust memory)."""
  if not os.path.isfile(path):
    kind = "a folder" if os.path.isdir(path) else "not a regular file (a FIFO, socket or device?)"
    raise DataFormatError(f"{path}: is {kind}; expected a data file.")
  size = os.path.getsize(path)
  if size > max_bytes:
    raise DataFormatError(f"{path}: {size:,} bytes, more than the {max_bytes:,} a file of this kind may have; "
                          "is it the right file?")


def _read_json(path: str):
  _check_file(path, MAX_JSON_BYTES)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except UnicodeDecodeError as e:
    raise DataFormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}).") from None
  except json.JSONDecodeError as e:
    raise DataFormatError(f"{path}: not valid JSON ({e}).") from None


def _read_label_dict(annotation_files):
  label_dict = None
  for path in annotation_files:
    ann = _read_json(path)
    if not isinstance(ann, dict) or "label_dict" not in ann or "database" not in ann:
      raise DataFormatError(f"{path}: missing key 'label_dict' or 'database' (TAL annotation format).")
    if label_dict is None:
      label_dict = ann["label_dict"]
    elif ann["label_dict"] != label_dict:
      raise DataFormatError(f"{path}: label_dict differs from {annotation_files[0]}.")
  if not isinstance(label_dict, dict) or not all(isinstance(v, int) for v in label_dict.values()):
    raise DataFormatError(f"{annotation_files[0]}: label_dict must map activity names to integer ids.")
  ids = sorted(label_dict.values())
  if ids != list(range(len(ids))):
    raise DataFormatError(f"{annotation_files[0]}: label_dict ids must be 0..{len(ids) - 1}, got {ids}.")
  return label_dict


def _validation_subjects(annotation_files):
  out = {}
  for path in annotation_files:
    split = int(_ANNOTATION.search(path).group(1))
    db = _read_json(path)["database"]
    if not isinstance(db, dict):
      raise DataFormatError(f"{path}: 'database' must map subject names (sbj_<k>) to entries.")
    held = [k for k, v in db.items() if isinstance(v, dict) and v.get("subset") == "Validation"]
    if len(held) != 1:
      raise DataFormatError(f"{path}: expected exactly one 'Validation' subject, found {held}.")
    m = re.fullmatch(r"sbj_(\d+)", held[0])
    if m is None:
      raise DataFormatError(f"{path}: validation subject {held[0]!r} is not named sbj_<integer>.")
    out[split] = int(m.group(1))
  return out


def _read_subject_csv(path, class_ids):
  _check_file(path, MAX_CSV_BYTES)
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.reader(f))
  except UnicodeDecodeError as e:
    raise DataFormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); export the CSV as UTF-8.") from None
  except csv.Error as e:
    raise DataFormatError(f"{path}: not a readable CSV ({e}).") from None
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
      if math.isinf(x):
        raise DataFormatError(f"{path}: line {r + 2}, column {header[c + 1]!r}: {v!r} is infinite; fix or remove "
                              "that value (empty and NaN values are read as 0, as the reference does).")
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
                            "holding raw/inertial/ and annotations/ (WEAR/Wetlab from the authors' share, or your own "
                            "recordings in that layout with --dataset=tal).")
  csvs = sorted(glob.glob(os.path.join(data_dir, "raw", "inertial", "sbj_*.csv")))
  anns = sorted(glob.glob(os.path.join(data_dir, "annotations", "loso_sbj_*.json")))
  stray = [p for p in csvs if not _SUBJECT_CSV.search(p)] + [p for p in anns if not _ANNOTATION.search(p)]
  if stray:
    raise DataFormatError(f"{stray[0]}: not named sbj_<integer>.csv / loso_sbj_<integer>.json; remove or rename "
                          "it (every file matching sbj_*.csv is read as a subject).")
  if not csvs:
    raise FileNotFoundError(f"{data_dir}: no raw/inertial/sbj_*.csv files.")
  if not anns:
    raise FileNotFoundError(f"{data_dir}: no annotations/loso_sbj_*.json files (needed for the label list).")
  label_dict = _read_label_dict(anns)
  names = sorted(label_dict, key=label_dict.get)
  class_ids = {n: i + 1 for i, n in enumerate(names)}
  subjects, channels = {}, None
  seen: dict[int, str] = {}
  for path in csvs:
    sbj = int(_SUBJECT_CSV.search(path).group(1))
    if sbj in seen:
      raise DataFormatError(f"{path}: subject {sbj} also has {seen[sbj]}; keep one file per subject.")
    seen[sbj] = path
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
