"""Data: HAPT and the watch set (safe unpickling, window count), WEAR/Wetlab layout on fixtures, synthetic, windows,
samplers."""
import gzip
import io
import json
import os
import pickle
import re

import jax
import numpy as np
import pytest

from jaxleak import data as D
from jaxleak.data import hapt, samplers, tal, watch


# --- HAPT ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hapt_dataset():
  return D.load_hapt()


def test_hapt_shape_and_window_count(hapt_dataset):
  ds = hapt_dataset
  assert ds.subject_ids == tuple(range(1, 31)) and ds.num_classes == 13 and ds.num_channels == 6
  assert sum(len(r) for r in ds.subjects.values()) == 61
  assert sum(r.signals.shape[0] for rs in ds.subjects.values() for r in rs) == 1_122_772
  clients = D.make_clients(ds)
  assert clients.windows.shape == (44_823, 50, 6)
  assert clients.client_size(0) == 1_592                                   # user 1


def test_hapt_label_runs_of_user_1(hapt_dataset):
  labels = hapt_dataset.subjects[1][0].labels
  runs = [(0, 0, 250), (5, 250, 1233), (7, 1233, 1393), (4, 1393, 2195), (8, 2195, 2360), (5, 2360, 3375)]
  for label, start, stop in runs:
    assert np.all(labels[start:stop] == label), (label, start, stop)


def test_hapt_user_28_lacks_classes_10_and_11(hapt_dataset):
  present = set(np.concatenate([r.labels for r in hapt_dataset.subjects[28]]).tolist())
  assert 10 not in present and 11 not in present and len(present) == 11


class _Evil:
  def __reduce__(self):
    return (os.system, ("echo pwned > /tmp/jaxleak_pwned",))


def test_safe_unpickler_refuses_a_crafted_pickle(tmp_path):
  path = tmp_path / "evil.pkl.gz"
  with gzip.open(path, "wb") as f:
    pickle.dump({1: [_Evil()]}, f, protocol=2)
  with pytest.raises(pickle.UnpicklingError, match="refusing global"):
    hapt.load_raw(str(path))
  assert not os.path.exists("/tmp/jaxleak_pwned")


def test_safe_unpickler_refuses_reconstructing_other_classes(tmp_path):
  import copyreg
  class Sneaky:
    def __reduce__(self):
      return (copyreg._reconstructor, (dict, object, None))
  path = tmp_path / "sneaky.pkl.gz"
  with gzip.open(path, "wb") as f:
    pickle.dump(Sneaky(), f, protocol=2)
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    hapt.load_raw(str(path))


# --- the seglearn watch set -----------------------------------------------------------------------------------------
def test_watch_is_ten_subjects_each_doing_every_exercise_twice():
  ds = D.load("watch")
  assert ds.name == "watch" and ds.subject_ids == tuple(range(1, 11)) and ds.num_channels == 6
  assert ds.class_names == ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
  for s, recordings in ds.subjects.items():                         # one exercise per recording, each twice
    firsts = sorted(int(r.labels[0]) for r in recordings)
    assert firsts == sorted(list(range(7)) * 2), s
    assert all((r.labels == r.labels[0]).all() and r.signals.dtype == np.float32 for r in recordings)
  assert sum(r.signals.shape[0] for rs in ds.subjects.values() for r in rs) == 244_102
  clients = D.make_clients(ds)
  assert clients.windows.shape == (9_556, 50, 6)
  raw = watch.load_raw(watch.watch_path())                          # the same numbers as the file, in its order
  first_of_7 = next(i for i, s in enumerate(raw["subject"]) if s == 7)
  np.testing.assert_array_equal(ds.subjects[7][0].signals, np.asarray(raw["X"][first_of_7], np.float32))


def _npy(tmp_path, obj, name="watch.npy"):
  path = str(tmp_path / name)
  np.save(path, obj, allow_pickle=True)
  return path


def test_watch_unpickler_refuses_code_and_other_globals(tmp_path):
  with pytest.raises(watch.WatchFileError, match="refusing global .*system.*seglearn watch file"):
    watch.load_raw(_npy(tmp_path, np.array({"X": [_Evil()]}, dtype=object)))
  assert not os.path.exists("/tmp/jaxleak_pwned")
  with pytest.raises(watch.WatchFileError, match="refusing global collections.OrderedDict"):
    import collections
    watch.load_raw(_npy(tmp_path, np.array(collections.OrderedDict(a=1), dtype=object)))


def _small_watch(**changes):
  rng = np.random.default_rng(0)
  raw = {"X": [rng.normal(size=(120, 6)) for _ in range(4)], "y": np.array([0, 1, 1, 0]),
         "subject": np.array([3, 3, 5, 5]), "side": np.array([1.0, 0.0, 1.0, 0.0]),
         "X_labels": ["ax", "ay", "az", "wx", "wy", "wz"], "y_labels": ["PEN", "ABD"]}
  raw.update(changes)
  return {k: v for k, v in raw.items() if v is not None}


def test_watch_loader_reads_a_file_of_that_form(tmp_path):
  ds = watch.load_watch(_npy(tmp_path, np.array(_small_watch(), dtype=object)))
  assert ds.subject_ids == (3, 5) and ds.class_names == ("PEN", "ABD")
  assert [int(r.labels[0]) for r in ds.subjects[3]] == [0, 1] and ds.subjects[5][0].signals.shape == (120, 6)


@pytest.mark.parametrize("changes, message", [
    (dict(X=None), r"no 'X' entry \(it has \['X_labels'"),
    (dict(y=np.array([0, 1, 2, 0])), r"recording 2 has label 2, outside the 2 exercises"),
    (dict(y=np.array([0, 1])), r"got 4 recordings, labels \(2,\)"),
    (dict(X=[np.zeros((120, 5))] * 4), r"recording 0 has shape \(120, 5\)"),
    (dict(X=[np.zeros((120, 6), np.int64)] * 4), r"dtype int64, not float"),
    (dict(y=np.array([0.0, 1, 1, 0])), r"integer labels and subjects"),
    (dict(X=[np.full((120, 6), np.nan)] * 4), r"NaN or inf"),
])
def test_watch_loader_names_what_is_wrong_with_a_file(tmp_path, changes, message):
  with pytest.raises(ValueError, match=message):
    watch.load_watch(_npy(tmp_path, np.array(_small_watch(**changes), dtype=object)))


def test_watch_loader_refuses_other_files_before_unpickling(tmp_path, monkeypatch):
  with pytest.raises(watch.WatchFileError, match=r"array of shape \(3,\) and dtype float64, not the pickled dict"):
    watch.load_raw(_npy(tmp_path, np.zeros(3)))
  (tmp_path / "text.npy").write_text("hello")
  with pytest.raises(watch.WatchFileError, match="not a NumPy .npy file"):
    watch.load_raw(str(tmp_path / "text.npy"))
  whole = open(watch.watch_path(), "rb").read()
  (tmp_path / "cut.npy").write_bytes(whole[:100_000])
  with pytest.raises(watch.WatchFileError, match="not a watch file this loader accepts"):
    watch.load_raw(str(tmp_path / "cut.npy"))
  with pytest.raises(watch.WatchFileError, match="missing or not a regular file"):
    watch.load_raw(str(tmp_path))
  monkeypatch.setattr(watch, "MAX_FILE_BYTES", 1_000)
  with pytest.raises(watch.WatchFileError, match="more than the 1,000 the seglearn watch file may have"):
    watch.load_raw(watch.watch_path())


def test_watch_without_its_extra_names_the_extra(monkeypatch, capsys):
  import importlib.util
  from experiments import single_step_leakage as SS
  from jaxleak import cli
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ImportError, match=r"pip install 'jaxleak\[watch\]'"):
    D.load("watch")
  assert cli.call(SS.main, SS.FLAGS, ["--dataset=watch", "--output_dir=/nonexistent/never"]) == 2
  err = capsys.readouterr().err
  assert "pip install 'jaxleak[watch]'" in err and "Traceback" not in err


def test_every_dataset_name_is_described_and_says_what_it_needs(monkeypatch, capsys):
  from jaxleak.data import __main__ as entry, catalogue
  assert list(catalogue.CATALOGUE) == list(D.POOL_DATASETS[2:]) + ["digits", "mnist"]
  assert catalogue.availability("synthetic_tiny") == "ready" and catalogue.availability("wear") == "needs --data_dir"
  with pytest.raises(ValueError, match="unknown dataset 'nope'; valid: hapt, watch"):
    catalogue.availability("nope")
  import importlib.util
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "seglearn" else object())
  assert entry.main(["jaxleak.data"]) == 0
  line = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["watch"])
  assert "pip install 'jaxleak[watch]'" in line and "7 exercises" in line
  assert entry.main(["jaxleak.data", "x"]) == 2 and "takes no arguments" in capsys.readouterr().err
  assert entry.main(["jaxleak.data", "--help"]) == 0 and "synthetic_tiny" in capsys.readouterr().out


# --- WEAR / Wetlab layout ----------------------------------------------------------------------------------------
LABELS = {"cutting": 0, "peeling": 1, "stirring": 2}


def write_tal_fixture(root, rows_per_subject=(130, 90, 110), bad=None):
  """Writes a 3-subject Wetlab-style folder; returns the root path."""
  inertial = root / "raw" / "inertial"; inertial.mkdir(parents=True)
  ann = root / "annotations"; ann.mkdir()
  names = ["", "cutting", "peeling", "stirring", "null"]
  for s, n in enumerate(rows_per_subject):
    lines = ["sbj_id,acc_x,acc_y,acc_z,label"]
    for r in range(n):
      lab = names[(r // 20) % len(names)]
      lines.append(f"{s},{r * 0.1:.2f},{-r * 0.01:.3f},{'' if r == 3 else '1.5'},{lab}")
    (inertial / f"sbj_{s}.csv").write_text("\n".join(lines) + "\n")
  for i in range(len(rows_per_subject)):
    db = {f"sbj_{s}": {"subset": "Validation" if s == i else "Training", "duration": n / 50, "fps": 50,
                       "annotations": []} for s, n in enumerate(rows_per_subject)}
    (ann / f"loso_sbj_{i}.json").write_text(json.dumps({"version": "1", "taxonomy": [], "database": db,
                                                         "label_dict": LABELS}))
  return root


def test_tal_loader_reads_fixture(tmp_path):
  ds = D.load_tal(str(write_tal_fixture(tmp_path)), "wetlab")
  assert ds.class_names == ("null", "cutting", "peeling", "stirring")
  assert ds.channel_names == ("acc_x", "acc_y", "acc_z")
  rec = ds.subjects[0][0]
  assert rec.signals.shape == (130, 3)
  assert rec.signals[3, 2] == 0.0 and rec.signals[4, 2] == 1.5              # missing value -> 0
  np.testing.assert_array_equal(rec.labels[[0, 20, 40, 60, 80, 100]], [0, 1, 2, 3, 0, 0])
  assert ds.loso_splits()[1] == (1, (0, 2))


def _break(root, name, text):
  (root / "raw" / "inertial" / name).write_text(text)


@pytest.mark.parametrize("content,message", [
    ("sbj_id,acc_x,acc_y,acc_z\n0,1,2,3\n", "missing 'label' column"),
    ("sbj_id,acc_x,acc_y,acc_z,label\n0,1,2,3,dancing\n", "unknown label 'dancing'"),
    ("sbj_id,acc_x,acc_y,acc_z,label\n", "no rows"),
    ("sbj_id,acc_x,acc_y,acc_z,label\n0,1,x,3,cutting\n", "not a number"),
    ("sbj_id,acc_x,acc_y,acc_z,label\n0,1,3,cutting\n", "has 4 fields"),
])
def test_tal_loader_names_file_and_problem(tmp_path, content, message):
  root = write_tal_fixture(tmp_path)
  _break(root, "sbj_1.csv", content)
  with pytest.raises(D.DataFormatError, match="sbj_1.csv.*" + message):
    D.load_tal(str(root))


def test_tal_loader_missing_folder_and_annotations(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    D.load_tal(str(tmp_path / "nope"))
  root = write_tal_fixture(tmp_path)
  for f in (root / "annotations").iterdir():
    f.unlink()
  with pytest.raises(FileNotFoundError, match="loso_sbj"):
    D.load_tal(str(root))


def test_wear_without_data_dir_suggests_synthetic():
  with pytest.raises(ValueError, match="synthetic_wear"):
    D.load("wear")


# --- synthetic and windows --------------------------------------------------------------------------------------
def test_synthetic_presets_have_the_papers_shapes():
  wear = D.make_synthetic("wear", scale=0.05)
  wetlab = D.make_synthetic("wetlab", scale=0.05)
  assert (len(wear.subjects), wear.num_channels, wear.num_classes) == (18, 12, 19)
  assert (len(wetlab.subjects), wetlab.num_channels, wetlab.num_classes) == (22, 3, 9)
  full = D.make_synthetic("wear", scale=1.0)
  assert abs(D.make_clients(full, [0]).client_size(0) - 6000) <= 1
  labels = np.concatenate([r.labels for rs in full.subjects.values() for r in rs])
  freq = np.bincount(labels, minlength=19) / len(labels)
  assert freq.argmax() == 0 and freq[1:].max() < freq[0]                  # NULL is the majority class
  np.testing.assert_array_equal(D.make_synthetic("tiny", seed=3).subjects[0][0].signals,
                                D.make_synthetic("tiny", seed=3).subjects[0][0].signals)


def test_window_starts_keep_every_full_window():
  np.testing.assert_array_equal(D.window_starts(100), [0, 25, 50])
  np.testing.assert_array_equal(D.window_starts(99), [0, 25])
  assert len(D.window_starts(49)) == 0


def test_windows_never_cross_recordings():
  rec_a = D.Recording(signals=np.zeros((75, 1), np.float32), labels=np.zeros(75, np.int32))
  rec_b = D.Recording(signals=np.ones((75, 1), np.float32), labels=np.ones(75, np.int32))
  ds = D.HarDataset("t", ("NULL", "a"), ("x",), {0: [rec_a, rec_b]})
  clients = D.make_clients(ds)
  assert clients.windows.shape == (4, 50, 1)
  assert all(np.unique(w).size == 1 for w in clients.windows)              # each window from one recording
  np.testing.assert_array_equal(clients.labels, [0, 0, 1, 1])


def test_window_label_is_the_last_sample():
  labels = np.arange(100, dtype=np.int32) % 7
  x, y = D.window_recording(D.Recording(np.zeros((100, 2), np.float32), labels))
  np.testing.assert_array_equal(y, labels[[49, 74, 99]])


# --- samplers ----------------------------------------------------------------------------------------------------
LAB = np.array([0] * 130 + [1] * 40 + [2] * 30 + [0] * 55, np.int32)       # n = 255, 3 classes


def test_sequential_keeps_order_and_drops_the_partial_batch():
  b = D.sample_client("sequential", jax.random.key(0), LAB, 50)
  np.testing.assert_array_equal(b, np.arange(250).reshape(5, 50))


def test_shuffle_is_a_permutation_without_replacement():
  b = D.sample_client("shuffle", jax.random.key(0), LAB, 50)
  assert b.shape == (5, 50) and len(np.unique(b)) == 250 and b.max() < len(LAB)


def test_balanced_gives_equal_class_counts_in_the_pool():
  b = D.sample_client("balanced", jax.random.key(0), LAB, 17)
  # q = 255 // 3 = 85 per class; 255 pooled, 15 full batches of 17 = all of them.
  assert b.shape == (15, 17) and b.max() < len(LAB)
  np.testing.assert_array_equal(np.bincount(LAB[b.ravel()]), [85, 85, 85])


def test_same_key_same_batches_other_key_other_batches():
  for s in ("shuffle", "balanced"):
    a = D.sample_client(s, jax.random.key(4), LAB, 50)
    np.testing.assert_array_equal(a, D.sample_client(s, jax.random.key(4), LAB, 50))
    assert not np.array_equal(a, D.sample_client(s, jax.random.key(5), LAB, 50))


def test_sample_clients_offsets_and_errors():
  ds = D.make_synthetic("tiny")
  clients = D.make_clients(ds)
  idx, owner = D.sample_clients("sequential", jax.random.key(0), clients, 100)
  for k in range(clients.num_clients):
    rows = idx[owner == k]
    assert rows.min() >= clients.offsets[k] and rows.max() < clients.offsets[k + 1]
  with pytest.raises(ValueError, match="larger than the data"):
    D.sample_clients("shuffle", jax.random.key(0), clients, 10_000)
  with pytest.raises(ValueError, match="unknown sampling strategy"):
    D.sample_client("random", jax.random.key(0), LAB, 10)


_POOL = D.LabelPool(x=np.zeros((20, 2), np.float32), y=np.arange(20) % 4, num_classes=4, name="toy")


@pytest.mark.parametrize("x, y, c, message", [
    # Each was accepted (or failed in NumPy's words at the first count): fractional or bool labels, NaN examples,
    # one class, a float num_classes, examples that are not numbers or not one array per example.
    (np.zeros((4, 2)), np.array([0.5, 1.0, 2.0, 3.0]), 4, "labels y must be integer class ids, got dtype float64"),
    (np.zeros((4, 2)), np.array([True, False, True, False]), 4, "labels y must be integer class ids"),
    (np.full((4, 2), np.nan), np.arange(4), 4, "examples x hold NaN or inf"),
    (np.zeros((4, 2)), np.zeros(4, int), 1, "num_classes, an integer >= 2; got 1"),
    (np.zeros((4, 2)), np.arange(4), 4.0, "num_classes, an integer >= 2; got 4.0"),
    (np.full((4, 2), "a"), np.arange(4), 4, "examples x must be real numbers"),
    (np.zeros(4), np.arange(4), 4, "one array per example"),
])
def test_a_label_pool_refuses_what_it_cannot_mean(x, y, c, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    D.LabelPool(x=x, y=y, num_classes=c, name="toy")


def test_a_label_pool_takes_lists_as_arrays():
  pool = D.LabelPool(x=[[0.0, 1.0], [2.0, 3.0]], y=[1, 0], num_classes=2)
  assert pool.example_shape == (2,) and pool.class_counts().tolist() == [1, 1]


@pytest.mark.parametrize("call, error, message", [
    (lambda: D.sample_client("shuffle", jax.random.key(0), LAB, 2.5), TypeError,      # was: slice indices must be
     "num_samples must be an integer"),
    (lambda: D.sample_client("balanced", jax.random.key(0), LAB, True), TypeError, "num_samples must be an integer"),
    (lambda: D.sample_client("shuffle", 0, LAB, 10), TypeError, r"key must be one JAX PRNG key, e.g. jax.random.key"),
    (lambda: D.sample_client("shuffle", jax.random.key(0), LAB[:254].reshape(2, -1), 10), ValueError, r"shape \[n\]"),
    (lambda: D.sample_queries("shuffle", jax.random.key(0), LAB, 0), ValueError,      # was: ZeroDivisionError
     "num_points must be positive"),
    (lambda: D.make_synthetic("tiny", scale=float("nan")), ValueError, "scale must be a finite number > 0, got nan"),
    (lambda: D.make_synthetic("tiny", seed=-1), ValueError, "seed must be an integer >= 0, got -1"),
    (lambda: D.make_clients(D.make_synthetic("tiny"), [1, 1]), ValueError,        # was: subject 1 twice, silently
     r"subject ids \[1\] are given more than once"),
    (lambda: D.make_clients(D.make_synthetic("tiny"), []), ValueError, "subject_ids is empty"),
    # Found 2026-12-05 (twenty-second session): a window longer than every recording gave clients of no windows.
    (lambda: D.make_clients(D.make_synthetic("tiny"), window=10 ** 7), ValueError,
     r"make_clients: no windows: every recording .* shorter than window=10000000 samples \(the longest has 7,5"),
    (lambda: D.repartition_dirichlet(D.make_clients(D.make_synthetic("tiny")), 3, 1.0, -1), ValueError,
     "seed must be an integer >= 0, got -1"),
    # Found 2026-12-04 (thirteenth session): no factors gave every label group 0 (a modulo by zero), a negative
    # factor passed; 0 auxiliary examples gave an empty array; seed -1 ended in NumPy's words.
    (lambda: D.quantity_groups(10, 0, ()), ValueError, r"factors must be one or more finite group sizes > 0"),
    (lambda: D.quantity_groups(10, 0, (1.0, -0.5)), ValueError, r"got \(1.0, -0.5\)"),
    (lambda: D.aux_per_label(_POOL, 0), ValueError, "samples_per_label must be a positive integer"),
    (lambda: D.aux_per_label(_POOL, 3, seed=-1), ValueError, "seed must be an integer >= 0, got -1"),
    (lambda: D.split_pool(_POOL, 0.5, seed=1.5), ValueError, "seed must be an integer >= 0, got 1.5"),
    # Found 2026-12-04 (sixteenth session): sampling_rate=0 made every segment 0 samples long and the generator
    # never returned; float or negative labels were sampled as classes of their own by the balanced sampler.
    (lambda: D.make_synthetic("tiny", sampling_rate=0), ValueError, "sampling_rate must be a positive integer"),
    (lambda: D.make_synthetic(3), TypeError, "preset must be a preset name"),
    (lambda: D.make_synthetic(D.SyntheticPreset(4, 3, 1, 300)), ValueError, "num_classes must be an integer >= 2"),
    (lambda: D.make_synthetic(D.SyntheticPreset(4, 3, 5, 300, null_fraction=2.0)), ValueError,
     r"null_fraction must be a finite number in \[0, 1\]"),
    (lambda: D.sample_client("balanced", jax.random.key(0), LAB + 0.5, 10), ValueError,
     "labels must be class ids, integers >= 0; got dtype float64"),
    (lambda: D.sample_client("balanced", jax.random.key(0), LAB - 3, 10), ValueError, "values from -3"),
    (lambda: D.window_starts(-5), ValueError, "length must be an integer >= 0"),     # was: no windows, silently
    (lambda: D.window_starts(100.5), ValueError, "length must be an integer >= 0"),
])
def test_samplers_and_synthetic_data_refuse_bad_arguments_by_name(call, error, message):
  with pytest.raises(error, match=message):
    call()


def test_a_client_without_windows_gets_no_batches_from_every_sampler():
  """Before: the balanced sampler divided by the number of classes (ZeroDivisionError)."""
  for strategy in D.STRATEGIES:
    assert D.sample_client(strategy, jax.random.key(0), np.zeros(0, np.int32), 5).shape == (0, 5)


def test_client_batches_do_not_depend_on_other_clients():
  clients_all = D.make_clients(D.make_synthetic("tiny"))
  clients_one = D.make_clients(D.make_synthetic("tiny"), [2])
  idx_all, owner = D.sample_clients("shuffle", jax.random.key(0), clients_all, 50)
  idx_one, _ = D.sample_clients("shuffle", jax.random.key(0), clients_one, 50)
  np.testing.assert_array_equal(idx_all[owner == 2] - clients_all.offsets[2], idx_one)


@pytest.mark.parametrize("content,message", [
    ("sbj_id,acc_x,acc_y,acc_z,label\n0,1,inf,3,cutting\n", "line 2, column 'acc_y': 'inf' is infinite"),
    (b"sbj_id,acc_x,acc_y,acc_z,label\n0,1,\xff\xfe,3,cutting\n", "not UTF-8"),
    ("sbj_id,acc_x,acc_y,acc_z,label\n0,1,2,3,cutting\n0,1,2", "line 3 has 3 fields"),     # truncated
])
def test_tal_loader_refuses_non_finite_undecodable_and_truncated_files(tmp_path, content, message):
  root = write_tal_fixture(tmp_path)
  path = root / "raw" / "inertial" / "sbj_1.csv"
  path.write_bytes(content if isinstance(content, bytes) else content.encode())
  with pytest.raises(D.DataFormatError, match="sbj_1.csv.*" + re.escape(message)):
    D.load_tal(str(root))


def test_tal_loader_refuses_special_stray_and_duplicate_files(tmp_path):
  root = write_tal_fixture(tmp_path)
  inertial = root / "raw" / "inertial"
  (inertial / "sbj_1.csv").unlink()
  (inertial / "sbj_1.csv").mkdir()                                      # a folder where a file is expected
  with pytest.raises(D.DataFormatError, match="sbj_1.csv: is a folder"):
    D.load_tal(str(root))
  (inertial / "sbj_1.csv").rmdir()
  os.mkfifo(inertial / "sbj_1.csv")                                     # a FIFO would block a plain open()
  with pytest.raises(D.DataFormatError, match="not a regular file"):
    D.load_tal(str(root))
  (inertial / "sbj_1.csv").unlink()
  (inertial / "sbj_1.csv").write_text((inertial / "sbj_0.csv").read_text())
  (inertial / "sbj_a.csv").write_text("x")                              # a stray file matching sbj_*.csv
  with pytest.raises(D.DataFormatError, match="sbj_a.csv: not named sbj_<integer>.csv"):
    D.load_tal(str(root))
  (inertial / "sbj_a.csv").unlink()
  (inertial / "sbj_01.csv").write_text((inertial / "sbj_0.csv").read_text())   # subject 1 listed twice
  with pytest.raises(D.DataFormatError, match="subject 1 also has"):
    D.load_tal(str(root))


def test_tal_loader_refuses_huge_and_broken_annotation_files(tmp_path, monkeypatch):
  root = write_tal_fixture(tmp_path)
  monkeypatch.setattr(tal, "MAX_CSV_BYTES", 100)
  with pytest.raises(D.DataFormatError, match="bytes, more than the 100"):
    D.load_tal(str(root))
  monkeypatch.undo()
  (root / "annotations" / "loso_sbj_0.json").write_bytes(b"\xff\x00{")
  with pytest.raises(D.DataFormatError, match="loso_sbj_0.json: not UTF-8"):
    D.load_tal(str(root))
  (root / "annotations" / "loso_sbj_0.json").write_text('{"label_dict": {"a": 0}, "database": {"sbj_x": '
                                                        '{"subset": "Validation"}}}')
  with pytest.raises(D.DataFormatError):
    D.load_tal(str(root))


def _pickle_gz(tmp_path, payload: bytes, name="HAPT.pkl.gz"):
  path = tmp_path / name
  with gzip.open(path, "wb") as f:
    f.write(payload)
  return str(path)


def test_hapt_unpickler_build_opcode_cannot_alter_the_stubs_for_later_loads(tmp_path):
  # GLOBAL pandas Index class; BUILD with (None, {"values": "pwned", "__init__": ...}) sets class attributes.
  evil = (b"\x80\x02cpandas.core.indexes.base\nIndex\nq\x00N}q\x01X\x06\x00\x00\x00valuesq\x02X\x05\x00\x00\x00"
          b"pwnedq\x03s\x86q\x04b.")
  try:
    hapt.load_raw(_pickle_gz(tmp_path, evil))
  except Exception:
    pass                                                          # refusing it outright is fine too
  fresh = hapt.SafeUnpickler(io.BytesIO(b"\x80\x02cpandas.core.indexes.base\nIndex\n."), encoding="latin1").load()
  assert getattr(fresh, "values", None) != "pwned"


def test_hapt_refuses_oversized_and_bomb_files_before_expanding(tmp_path, monkeypatch):
  monkeypatch.setattr(hapt, "MAX_DECOMPRESSED_BYTES", 10_000)
  bomb = _pickle_gz(tmp_path, b"\x00" * 1_000_000)                # ~1 KB compressed, 1 MB expanded
  with pytest.raises(ValueError, match="expands to more than 10,000 bytes"):
    hapt.load_raw(bomb)
  monkeypatch.setattr(hapt, "MAX_COMPRESSED_BYTES", 100)
  with pytest.raises(ValueError, match="bytes on disk, more than"):
    hapt.load_raw(bomb)
  with pytest.raises(ValueError, match="not a regular file, expected the gzipped HAPT pickle"):
    hapt.load_raw(str(tmp_path))


def test_dirichlet_repartition_deals_every_window_once_and_concentrates_labels():
  ds = D.make_synthetic("tiny")
  clients = D.make_clients(ds)
  def labels_per_client(alpha, k=6):
    new = D.repartition_dirichlet(clients, k, alpha, seed=0)
    assert new.subject_ids == tuple(range(new.num_clients)) and new.num_clients <= k
    assert len(new.labels) == len(clients.labels)
    np.testing.assert_array_equal(np.bincount(new.labels), np.bincount(clients.labels))
    # every window dealt exactly once: the multiset of windows is unchanged
    key = lambda w: np.sort(w.reshape(len(w), -1).sum(1))
    np.testing.assert_allclose(key(new.windows), key(clients.windows), rtol=1e-6)
    return np.mean([np.unique(new.client_labels(i)).size for i in range(new.num_clients)])
  assert labels_per_client(0.05) < labels_per_client(100.0)
  with pytest.raises(ValueError, match="dirichlet_alpha"):
    D.repartition_dirichlet(clients, 3, 0.0, seed=0)
  with pytest.raises(ValueError, match="dirichlet_clients"):
    D.repartition_dirichlet(clients, 0, 1.0, seed=0)
  # Found 2026-12-04 (fourteenth session): a string alpha ended in NumPy's "ufunc 'isfinite' not supported".
  with pytest.raises(ValueError, match="dirichlet_alpha must be a finite number > 0, got '1'"):
    D.repartition_dirichlet(clients, 3, "1", seed=0)


def test_clients_holding_keeps_the_large_clients_whole_with_their_ids():
  windows = np.arange(14, dtype=np.float32).reshape(14, 1, 1)
  clients = D.WindowedClients(windows=windows, labels=np.arange(14) % 3, offsets=np.array([0, 5, 7, 14]),
                              subject_ids=(4, 9, 11), num_classes=3)
  kept, left_out = D.clients_holding(clients, 4)
  assert kept.subject_ids == (4, 11) and left_out == [(9, 2)]
  np.testing.assert_array_equal(kept.offsets, [0, 5, 12])
  np.testing.assert_array_equal(kept.windows.ravel(), [0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13])
  np.testing.assert_array_equal(kept.labels, clients.labels[[0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13]])
  assert D.clients_holding(clients, 2) == (clients, [])                 # nothing to leave out: the same clients
  none, left_out = D.clients_holding(clients, 8)
  assert none.num_clients == 0 and len(none.labels) == 0 and left_out == [(4, 5), (9, 2), (11, 7)]


def test_a_balanced_pool_smaller_than_n_is_refused_or_left_out_not_a_traceback(tmp_path, capsys):
  """Found 2026-12-07 (thirty-seventh session): the balanced pool holds k floor(n/k) windows, up to k - 1 fewer
  than n, so a client with n >= N could still have no balanced batch: single-step runs scored it NaN without a
  word, multi-step runs ended in `IndexError: index 0 is out of bounds` while sampling."""
  from experiments import multi_step_leakage as ms, single_step_leakage as ss
  from jaxleak import cli
  labels = np.array([0] * 10 + [1] * 8 + [2] * 5)                     # n = 23, k = 3: a pool of 3 x 7 = 21
  assert D.usable_windows("balanced", labels) == 21 and D.usable_windows("shuffle", labels) == 23
  assert D.usable_windows("sequential", labels) == 23 and D.usable_windows("balanced", labels[:0]) == 0
  key = jax.random.key(0)
  assert D.sample_client("balanced", key, labels, 22).shape == (0, 22)
  assert D.sample_queries("balanced", key, labels, 22).shape == (0, 22)          # was the IndexError
  assert D.sample_queries("balanced", key, labels, 21).shape == (1, 21)
  assert D.sample_queries("shuffle", key, labels, 22).shape == (1, 22)
  clients = D.WindowedClients(windows=np.zeros((46, 1, 1), np.float32), labels=np.concatenate([labels, labels[::-1]]),
                              offsets=np.array([0, 23, 46]), subject_ids=(5, 8), num_classes=3)
  D.check_client_sizes(clients, 22)                                  # all n windows: enough
  with pytest.raises(ValueError, match=re.escape("num_samples 22 is larger than the balanced pool of clients "
                                                 "(subject, windows, pool) [(5, 23, 21), (8, 23, 21)]")):
    D.check_client_sizes(clients, 22, strategy="balanced")
  assert D.clients_holding(clients, 22)[1] == [] and D.clients_holding(clients, 22, "shuffle")[1] == []
  kept, left_out = D.clients_holding(clients, 22, "balanced")
  assert kept.num_clients == 0 and left_out == [(5, 21), (8, 21)]
  # the drivers and a study: one line, before any work (the fixture's clients: 27, 25, 27 windows, pools of 24)
  root = write_tal_fixture(tmp_path / "wear", rows_per_subject=(700, 650, 720))
  flags = ["--dataset=tal", f"--data_dir={root}", "--model=tinyhar", "--sampling=balanced", "--num_samples=25"]
  for main, FLAGS, extra in ((ss.main, ss.FLAGS, []), (ms.main, ms.FLAGS, ["--local_batch_size=5"])):
    assert cli.call(main, FLAGS, [*flags, *extra, f"--output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert "larger than the balanced pool of clients (subject, windows, pool) [(0, 27, 24), (1, 25, 24), (2, 27, " \
           "24)]" in err and len(err.strip().splitlines()) == 1, err
  assert not (tmp_path / "out").exists()
  from jaxleak import study as study_cli
  study = ["run", "har_sampling", "--set=datasets=tal", f"--set=data_dir={root}", "--set=models=tinyhar",
           "--set=states=untrained", "--set=num_samples=25", f"--study_dir={tmp_path / 's'}", "--dry_run"]
  assert cli.call(study_cli.main, study_cli.FLAGS, study) == 2
  assert "tal tinyhar balanced: num_samples 25 is larger than the balanced pool" in capsys.readouterr().err
  assert cli.call(study_cli.main, study_cli.FLAGS, [*study, "--set=samplings=shuffle,sequential"]) == 0


@pytest.mark.parametrize("strategy", ["shuffle", "balanced"])
def test_each_multi_step_query_is_its_samplers_first_batch_under_fold_in_key_q(strategy):
  """sample_queries' contract (spec 3.3, a fresh draw per query): query q is the first batch the single-pass sampler
  draws with fold_in(key, q). The keys come from one compiled call, padded to a power of two; checked against
  the definition, one eager fold_in per query, for typed and raw keys and many sizes."""
  rs = np.random.default_rng(7)
  for trial in range(12):
    n, k, num = int(rs.integers(20, 700)), int(rs.integers(1, 9)), int(rs.integers(1, 40))
    labels = rs.integers(0, k, n)
    key = jax.random.key(trial) if trial % 2 else jax.random.PRNGKey(trial)
    queries = D.sample_queries(strategy, key, labels, min(num, n))
    single = {"shuffle": samplers.shuffle, "balanced": samplers.balanced}[strategy]
    expected = [single(jax.random.fold_in(key, q), labels, min(num, n)) for q in range(n // min(num, n))]
    expected = np.stack([b[0] for b in expected]) if all(len(b) for b in expected) else np.zeros((0, min(num, n)))
    np.testing.assert_array_equal(queries, expected)
    assert queries.dtype == np.int32


def test_dirichlet_clients_too_small_for_one_update_are_left_out_and_said():
  # Found 2026-12-06 (thirty-fifth session): the preset har_dirichlet failed its own dry run ("num_samples 100 is
  # larger than the data of clients [(3, 93), (14, 32), (20, 70)]" at alpha = 0.1 on synthetic Wetlab), and the
  # drivers advised --clients, which selects subjects before the re-deal, not the re-dealt clients.
  from jaxleak.runs.leakage import LeakageConfig
  from jaxleak.runs.leakage.prepare import attacked_clients
  cfg = LeakageConfig(dataset="synthetic_wetlab", model="tinyhar", dirichlet_alpha=0.1)
  ds = D.load("synthetic_wetlab", scale=cfg.synthetic_scale, seed=cfg.seed)           # as the run loads it
  said = []
  clients = attacked_clients(ds, cfg, said.append)
  dealt = D.repartition_dirichlet(D.make_clients(ds), 22, 0.1, seed=cfg.seed)
  small = [(s, dealt.client_size(k)) for k, s in enumerate(dealt.subject_ids) if dealt.client_size(k) < 100]
  assert small and [s for s, _ in small] == [s for s in dealt.subject_ids if s not in clients.subject_ids]
  for k, s in enumerate(clients.subject_ids):                        # the others, whole and bitwise
    j = dealt.subject_ids.index(s)
    np.testing.assert_array_equal(clients.windows[clients.offsets[k]:clients.offsets[k + 1]],
                                  dealt.windows[dealt.offsets[j]:dealt.offsets[j + 1]])
  assert said == [f"dirichlet_alpha=0.1: {len(small)} of the 22 re-dealt clients hold fewer than N=100 windows and "
                  f"send no update, left out (client, windows): {small}"]
  D.check_client_sizes(clients, 100)                                 # what was refused before
  big = LeakageConfig(dataset="synthetic_wetlab", model="tinyhar", dirichlet_alpha=10.0)
  assert attacked_clients(ds, big, said.append).subject_ids == tuple(range(22)) and len(said) == 1
  with pytest.raises(ValueError, match=r"dirichlet_alpha=0.1: none of the 22 re-dealt clients holds N=100000 windows "
                                       r"\(the largest holds \d+\); raise dirichlet_alpha, lower N"):
    attacked_clients(ds, LeakageConfig(dataset="synthetic_wetlab", model="tinyhar", dirichlet_alpha=0.1,
                                       num_samples=100000))


def test_leakage_run_on_dirichlet_clients_and_refusals():
  from jaxleak.runs.leakage import LeakageConfig, run_leakage
  cfg = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=40, attacks=("ebi",),
                      dirichlet_alpha=0.3, dirichlet_clients=3)
  res = run_leakage(cfg)
  assert set(res.subject_ids) <= {0, 1, 2} and len(res.batch_client) > 0
  with pytest.raises(ValueError, match="LOSO"):
    LeakageConfig(dirichlet_alpha=0.5, checkpoint_dir="x").validate()
  with pytest.raises(ValueError, match="needs dirichlet_alpha"):
    LeakageConfig(dirichlet_clients=4).validate()


def test_your_own_data_in_the_tal_layout_runs_under_its_own_name(tmp_path, capsys):
  """--dataset=tal: any folder in the WEAR/Wetlab layout, named 'tal:<folder>' so that nothing (reports' paper
  columns) takes it for the papers' WEAR or Wetlab, even in a folder called wear."""
  from experiments import single_step_leakage as ss
  from jaxleak import cli
  from jaxleak.runs.report import paper
  root = write_tal_fixture(tmp_path / "wear", rows_per_subject=(700, 650, 720))
  ds = D.load("tal", data_dir=str(root))
  assert ds.name == "tal:wear" and ds.class_names == ("null", "cutting", "peeling", "stirring")
  assert paper.thesis_dataset(ds.name) is None and paper.thesis_dataset("wear") == "wear"
  rc = cli.call(ss.main, ss.FLAGS, ["--dataset=tal", f"--data_dir={root}", "--model=tinyhar", "--num_samples=20",
                                    "--attacks=ebi,llbg", f"--output_dir={tmp_path / 'out'}"])
  out = capsys.readouterr()
  assert rc == 0, out.err
  assert out.out.startswith("tal:wear | tinyhar | shuffle | N=20 | 3 clients")
  assert json.load(open(tmp_path / "out" / "manifest.json"))["dataset"] == "tal:wear"
  rc = cli.call(ss.main, ss.FLAGS, ["--dataset=tal", f"--output_dir={tmp_path / 'out2'}"])
  err = capsys.readouterr().err
  assert rc == 2 and "needs --data_dir" in err and "jaxleak.data.tal" in err and len(err.strip().splitlines()) == 1


def _recording(labels=(0, 1, 2, 3), channels=3, signals=None, label_dtype=np.int32):
  y = np.repeat(np.asarray(labels), 25).astype(label_dtype)
  x = np.zeros((len(y), channels), np.float32) if signals is None else signals
  return D.Recording(x, y)


@pytest.mark.parametrize("make,message", [
    (lambda: {1: [_recording()], 2: [_recording(), _recording((0, 7, -1))]},
     "subject 2, recording 1: labels [-1, 7] outside [0, 4): labels index class_names"),
    (lambda: {1: [_recording(channels=2)]}, "subject 1, recording 0: 2 signal channels, but 3 channel_names"),
    (lambda: {1: [_recording(label_dtype=np.float32)]}, "labels must be integer class indices"),
    (lambda: {1: [_recording(signals=np.full((100, 3), np.inf, np.float32))]},
     "signals hold NaN or inf in 100 of 100 rows (the first: row 0)"),
    (lambda: {1: [_recording(signals=np.full((100, 3), "a"))]}, "signals must be real numbers"),
    (lambda: {}, "needs class names, channel names and at least one subject"),
])
def test_a_dataset_refuses_labels_channels_or_signals_it_cannot_mean(make, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    D.HarDataset(name="mine", class_names=("null", "a", "b", "c"), channel_names=("x", "y", "z"), subjects=make())
  D.HarDataset(name="mine", class_names=("null", "a", "b", "c"), channel_names=("x", "y", "z"),
               subjects={1: [_recording()]})                              # the same, well formed


@pytest.mark.parametrize("changes,message", [
    # Each was accepted: string or negative subject ids ended deep in the run ("invalid literal for int()",
    # "-1 out of bounds for uint32"), a float id was truncated into the sampling key (1.5 and 1 share one); a
    # string of class names gave one class per letter; a hold-out subject that does not exist held out nobody.
    (dict(subjects={"s1": [0]}), "subject id 's1' must be an integer in [0, 2**32)"),
    (dict(subjects={-1: [0]}), "subject id -1 must be an integer"),
    (dict(subjects={1.5: [0]}), "subject id 1.5 must be an integer"),
    (dict(subjects={True: [0]}), "subject id True must be an integer"),
    (dict(subjects={2 ** 32: [0]}), "must be an integer in [0, 2**32)"),
    (dict(subjects=[0]), "subjects must map subject id -> list of recordings"),
    (dict(subjects={1: 0}), "subject 1: give a list of Recording objects"),         # a bare Recording
    (dict(class_names="nabc"), "class_names must be a tuple of strings"),
    (dict(class_names=("null", "a", "a")), "class_names ['a'] appear more than once"),
    (dict(channel_names=("x", "x", "z")), "channel_names ['x'] appear more than once"),
    (dict(class_names=("null",)), "1 class; label attacks need at least 2"),
    (dict(sampling_rate=0), "sampling_rate must be a positive integer"),
    (dict(sampling_rate=50.5), "sampling_rate must be a positive integer"),
    (dict(name=""), "needs a name"),
    (dict(loso_validation={0: 7}), "loso_validation holds out subjects [7] that are not among its subjects (1,)"),
    (dict(subjects={1: [0], 2: [0]}, loso_validation={0: 1, 1: 1}), "holds out subjects [1] in more than one split"),
])
def test_a_dataset_refuses_ids_and_names_it_cannot_use(changes, message):
  fields = dict(name="mine", class_names=("null", "a", "b", "c"), channel_names=("x", "y", "z"),
                subjects={1: [0]})
  fields.update(changes)
  if isinstance(fields["subjects"], dict):                 # 0 stands for a well-formed recording, [0] for a list
    fields["subjects"] = {s: ([_recording()] if r == [0] else _recording()) for s, r in fields["subjects"].items()}
  if fields.get("class_names") == ("null",):
    fields["subjects"] = {1: [_recording((0, 0, 0))]}
  with pytest.raises(ValueError, match=re.escape(message)):
    D.HarDataset(**fields)


def test_a_dataset_takes_lists_where_it_means_arrays_and_tuples():
  ds = D.HarDataset(name="mine", class_names=["null", "a"], channel_names=["x"],
                    subjects={np.int64(3): [D.Recording([[0.5], [1.5]], [0, 1])]}, loso_validation={0: 3})
  assert ds.class_names == ("null", "a") and ds.channel_names == ("x",) and ds.loso_splits() == [(3, ())]
  rec = ds.subjects[3][0]
  assert rec.signals.shape == (2, 1) and rec.labels.dtype.kind == "i"


@pytest.mark.parametrize("window,stride", [(0, 25), (50, 0), (-50, 25), (50, 2.5)])
def test_windows_and_strides_must_be_positive_integers(window, stride):
  with pytest.raises(ValueError, match="must be a positive integer"):
    D.window_starts(300, window, stride)
  np.testing.assert_array_equal(D.window_starts(300, 50, 60), [0, 60, 120, 180, 240])   # gaps are allowed


def test_a_federation_larger_than_memory_is_refused_before_drawing(monkeypatch):
  # Found 2026-12-07: num_participants=1e20 ended in NumPy's "Maximum allowed dimension exceeded" (1e9 would have
  # drawn for days first, a Python loop over participants).
  from jaxleak.data import label_pools, synthetic
  monkeypatch.setattr(synthetic, "physical_memory_bytes", lambda: 2 ** 28)       # a 256 MiB machine
  monkeypatch.setattr(label_pools, "_draw", lambda *a: pytest.fail("drew before refusing"))
  each = 9 * (3 * 2 + 1) + 112 + 5 * 4                                  # main labels (1, 3) x 2 examples + 1 other
  with pytest.raises(ValueError, match=re.escape(f"num_participants=10,000,000: participants of up to 7 examples "
                                                 f"each need about 1.8 GiB of memory, more than this machine's 0.25 "
                                                 f"GiB; use at most about {2 ** 28 // each:,} participants.")):
    D.allocate_main_labels(_POOL, 10_000_000, main_labels=(1, 3), samples_per_label=2, other_samples=1)
  with pytest.raises(ValueError, match="num_participants=10,000,000: participants of up to 16 examples each"):
    D.allocate_dirichlet(_POOL, 10_000_000, alpha=0.5, samples_per_participant=16, min_owned=2)
  monkeypatch.undo()
  assert D.allocate_main_labels(_POOL, 3, main_labels=(1, 3), samples_per_label=2, other_samples=1).index.shape[0] == 3


def test_a_synthetic_dataset_larger_than_memory_is_refused_before_allocating(monkeypatch):
  """Found 2026-12-04 (sixteenth session): --synthetic_scale=1e6 allocated until the kernel killed the process."""
  from jaxleak.data import synthetic
  with pytest.raises(ValueError, match=r"scale=1e\+06 makes recordings of 150,000,000,025 samples per subject"):
    D.make_synthetic("wear", scale=1e6)
  monkeypatch.setattr(synthetic, "physical_memory_bytes", lambda: 2 ** 28)       # a 256 MiB machine
  with pytest.raises(ValueError, match=r"about 0.44 GiB of memory with their windows, more than this machine's "
                     r"0.25 GiB. Use a scale of at most about 0.565"):
    D.make_synthetic("wear", scale=1.0)
  assert D.make_synthetic("tiny").name == "synthetic_tiny"
