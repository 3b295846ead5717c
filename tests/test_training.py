"""Fold training: vmapped fold equals the fold alone, checkpoints round-trip, resume equals an unbroken run."""
import dataclasses
import os

import jax
import numpy as np
import pytest

from jaxleak import data as D
from jaxleak import models, storage
from jaxleak.runs import fold_training as T

CFG = T.TrainConfig(epochs=2, batch_size=50, lr=1e-3, lr_step_epochs=1, lr_decay=0.5)


@pytest.fixture(scope="module")
def setup():
  ds = D.make_synthetic("tiny", scale=0.5)
  # Shorten subject 1 so the folds' training pools differ in size and the vmapped run has masked steps.
  rec = ds.subjects[1][0]
  short = D.Recording(signals=rec.signals[:2000], labels=rec.labels[:2000])
  ds = dataclasses.replace(ds, subjects={**ds.subjects, 1: [short]})
  clients = D.make_clients(ds)
  return ds, clients, models.build("tinyhar", ds.num_classes, filters=8)


def _assert_trees_close(a, b, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol), a, b)


def test_vmapped_folds_equal_each_fold_trained_alone(setup):
  """All folds in one vmapped computation equal the folds trained one by one (sequential execution)."""
  ds, clients, model = setup
  folds = T.Folds(tuple(range(clients.num_clients)))
  v, _ = T.train_folds(model, clients, folds, ds.num_classes, CFG, fold_execution="vmap")
  s, _ = T.train_folds(model, clients, folds, ds.num_classes, CFG, fold_execution="sequential")
  _assert_trees_close(v.params, s.params, atol=1e-5)
  # Folds have different pool sizes here, so some ran masked steps: the check covers the masking.
  sizes = {len(folds.train_pool(clients, f)) // 50 for f in range(4)}
  assert len(sizes) > 1


def test_checkpoint_round_trip(setup, tmp_path):
  ds, clients, model = setup
  folds = T.Folds((0, 1))
  state = T.init_state(model, T.make_optimizer(CFG), jax.random.key(3), 50, ds.num_channels, 2)   # no training needed
  ckpt = storage.Checkpointer(str(tmp_path / "folds.ckpt"), T.checkpoint_config(model, CFG, clients, folds))
  ckpt.save(jax.device_get(state), {"epochs_done": 1})
  target = jax.tree.map(np.zeros_like, state)
  loaded, meta = ckpt.restore(target)
  _assert_trees_close(loaded, state, atol=0)
  assert meta == {"epochs_done": 1}
  assert os.listdir(tmp_path) == ["folds.ckpt"]


def test_a_checkpoint_another_process_trains_into_is_refused(setup, tmp_path):
  """Found 2026-12-05 (seventeenth session): two trainings into one checkpoint each saved their own epochs over the
  other's (a later epoch could be replaced by an earlier one). The claim is an flock: another open file
  description, so another holder in this process conflicts too."""
  ds, clients, model = setup
  folds = T.Folds((0, 3))
  path = str(tmp_path / "folds.ckpt")
  with storage.exclusive_run(path, "fold training"):
    with pytest.raises(storage.StorageError, match=r"another process \(.* pid \d+\) is running this fold training"):
      T.train_folds(model, clients, folds, ds.num_classes, CFG, checkpoint_path=path)
  assert not os.path.exists(path)


def test_resume_after_interruption_gives_the_same_final_params(setup, tmp_path):
  ds, clients, model = setup
  folds = T.Folds((0, 3))
  unbroken, _ = T.train_folds(model, clients, folds, ds.num_classes, CFG)
  path = str(tmp_path / "run" / "folds.ckpt")
  _, h1 = T.train_folds(model, clients, folds, ds.num_classes, CFG, checkpoint_path=path, stop_after_epochs=1)
  resumed, h2 = T.train_folds(model, clients, folds, ds.num_classes, CFG, checkpoint_path=path)
  assert [r["epoch"] for r in h1] == [1] and [r["epoch"] for r in h2] == [2]
  _assert_trees_close(resumed.params, unbroken.params)


def test_a_long_epoch_reports_its_steps_with_an_eta(setup, monkeypatch):
  ds, clients, model = setup
  lines = []
  monkeypatch.setattr(T, "PROGRESS_EVERY_S", 0.0)               # every step is "long enough" for a line
  T.train_folds(model, clients, T.Folds((0,)), ds.num_classes, dataclasses.replace(CFG, epochs=1),
                progress=lines.append, fold_execution="sequential")
  steps = T.steps_per_epoch(clients, T.Folds((0,)), CFG)
  inner = [l for l in lines if ": step " in l]
  assert len(inner) == steps - 1 and inner[0].startswith(f"epoch 1/1: step 1/{steps} (")
  assert all("ETA" in l for l in inner) and lines[-1].startswith("epoch 1/1: ") and "accuracy" in lines[-1]


def test_resume_refuses_a_checkpoint_of_another_config_and_extends_epochs(setup, tmp_path):
  ds, clients, model = setup
  path = str(tmp_path / "folds.ckpt")
  one = dataclasses.replace(CFG, epochs=1)
  T.train_folds(model, clients, T.Folds((0,)), ds.num_classes, one, checkpoint_path=path)
  with pytest.raises(ValueError, match=r"another configuration \(train.lr: stored 0.001, now 0.5\)"):
    T.train_folds(model, clients, T.Folds((0,)), ds.num_classes, dataclasses.replace(one, lr=0.5),
                  checkpoint_path=path)
  # More epochs than stored: training continues from the checkpoint (epoch 2 only).
  _, history = T.train_folds(model, clients, T.Folds((0,)), ds.num_classes, CFG, checkpoint_path=path)
  assert [r["epoch"] for r in history] == [2]
  with pytest.raises(ValueError, match="already holds 2 epochs"):
    T.train_folds(model, clients, T.Folds((0,)), ds.num_classes, one, checkpoint_path=path)


def test_diverged_training_stops_and_its_models_are_refused(setup, tmp_path, monkeypatch):
  ds, clients, model = setup
  path = str(tmp_path / "folds.ckpt")
  wild = dataclasses.replace(CFG, epochs=1, lr=1e15)
  with pytest.raises(ValueError, match=r"training diverged in epoch 1: the weights of the folds holding out "
                                       r"subjects \[0\] are not finite"):
    T.train_folds(model, clients, T.Folds((0,)), ds.num_classes, wild, checkpoint_path=path)
  assert not os.path.exists(path)                                           # nothing saved
  with monkeypatch.context() as m:                                          # as an unchecked trainer would save it
    m.setattr(T, "nonfinite_folds", lambda params, num_folds: [])
    T.train_folds(model, clients, T.Folds((0,)), ds.num_classes, wild, checkpoint_path=path)
  with pytest.raises(ValueError, match=r"the models holding out subjects \[0\] have non-finite weights"):
    T.load_fold_models(path, model, 50, ds.num_channels)
  with pytest.raises(ValueError, match=r"batch_size 100000 is larger than the training windows of the folds "
                                       r"holding out subjects \(subject: windows\) \{0: "):
    T.train_folds(model, clients, T.Folds((0,)), ds.num_classes, dataclasses.replace(CFG, batch_size=100000))


def test_trained_models_of_another_dataset_or_model_are_refused(setup, tmp_path):
  ds, clients, model = setup
  path = T.checkpoint_path(str(tmp_path))
  T.train_folds(model, clients, T.Folds((0,)), ds.num_classes, dataclasses.replace(CFG, epochs=1),
                checkpoint_path=path, dataset_name="synthetic_tiny")
  other = models.build("deepconvlstm", ds.num_classes)
  with pytest.raises(ValueError, match="trained with model") as e:
    T.load_fold_models(path, other, 50, ds.num_channels, dataset="synthetic_tiny")
  assert "\n" not in str(e.value) and "model TinyHAR(num_classes=5, filters=8, kernel_size=9" in str(e.value)
  assert "this run uses DeepConvLSTM(num_classes=5, conv_filters=64" in str(e.value)
  with pytest.raises(ValueError, match="trained with dataset 'synthetic_tiny'"):
    T.load_fold_models(path, model, 50, ds.num_channels, dataset="hapt")


def test_trained_models_are_refused_on_other_windows_or_labels(tmp_path):
  """Checkpoints record each subject's windows and labels; other data (scale, seed, one label) is refused."""
  from jaxleak.runs.leakage import LeakageConfig, run_leakage
  ds = D.make_synthetic("tiny", scale=0.5)
  model = models.build("tinyhar", ds.num_classes)
  ckpt = str(tmp_path / "ck")
  T.train_folds(model, D.make_clients(ds), T.Folds((1, 2)), ds.num_classes,
                dataclasses.replace(CFG, epochs=1, batch_size=100), checkpoint_path=T.checkpoint_path(ckpt),
                dataset_name=ds.name)
  cfg = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=50, clients=(1, 2), attacks=("ebi",),
                      checkpoint_dir=ckpt)
  stored = storage.read_checkpoint_header(T.checkpoint_path(ckpt))["config"]
  assert T.check_training_data(ckpt, stored, D.make_clients(ds)) is True     # the data it was trained on
  for other in (D.make_synthetic("tiny", scale=1.0), D.make_synthetic("tiny", scale=0.5, seed=7)):
    with pytest.raises(ValueError, match=r"trained on other data than this run's: 2 of 2 subjects differ.*"
                                         r"--synthetic_scale"):
      run_leakage(cfg, dataset=other)
  rec = ds.subjects[2][0]
  relabelled = D.Recording(signals=rec.signals, labels=np.where(np.arange(len(rec.labels)) < 200, 0, rec.labels))
  assert not np.array_equal(relabelled.labels, rec.labels)
  with pytest.raises(ValueError, match=r"1 of 2 subjects differ .*\(subject 2: (\d+) windows there, \1 windows here\)"):
    run_leakage(cfg, dataset=dataclasses.replace(ds, subjects={**ds.subjects, 2: [relabelled]}))
  # A checkpoint written before the digests were recorded is used unchecked (the leakage run logs a note).
  assert T.check_training_data("old.ckpt", {"dataset": "synthetic_tiny"}, D.make_clients(ds)) is False
  path = T.checkpoint_path(ckpt)
  header = storage.read_checkpoint_header(path)
  state, _ = storage.Checkpointer(path, stored).restore(
      T.init_state(model, T.make_optimizer(CFG), jax.random.key(0), 50, ds.num_channels, 2))
  old = str(tmp_path / "old" / "folds.ckpt")
  storage.Checkpointer(old, {k: v for k, v in stored.items() if k != "data"}).save(state, header["meta"])
  notes = []
  T.load_fold_models(old, model, 50, ds.num_channels, dataset=ds.name,
                     clients=D.make_clients(D.make_synthetic("tiny", scale=1.0)), progress=notes.append)
  assert len(notes) == 1 and "predates the record of the data" in notes[0]


def test_class_weights_and_macro_f1_by_hand():
  np.testing.assert_allclose(T.class_weights(np.array([0, 0, 0, 2]), 3), [4 / 6, 0.0, 2.0])
  true, pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
  # class 0: P 1, R 0.5, F1 2/3; class 1: P 2/3, R 1, F1 0.8.
  assert abs(T.macro_f1(true, pred, 3) - (2 / 3 + 0.8) / 2) < 1e-9
  assert T.learning_rate(T.TrainConfig(), 0) == 1e-4 and abs(T.learning_rate(T.TrainConfig(), 25) - 1e-4 * 0.81) < 1e-12


def test_leakage_on_trained_folds_attacks_each_client_with_its_own_fold(tmp_path):
  from jaxleak.runs.leakage import LeakageConfig, run_leakage
  ds = D.make_synthetic("tiny")
  clients = D.make_clients(ds)
  model = models.build("tinyhar", ds.num_classes)
  ckpt = tmp_path / "ck"
  state, _ = T.train_folds(model, clients, T.Folds((1, 2)), ds.num_classes,
                           dataclasses.replace(CFG, epochs=1, batch_size=100),
                           checkpoint_path=T.checkpoint_path(str(ckpt)))
  cfg = LeakageConfig(dataset="synthetic_tiny", model="tinyhar", num_samples=50, clients=(1, 2),
                         attacks=("ebi", "ilrg", "llg_star"), checkpoint_dir=str(ckpt))
  trained = run_leakage(cfg, dataset=ds)
  alone = run_leakage(dataclasses.replace(cfg, checkpoint_dir=None, clients=(2,)), dataset=ds,
                          variables=T.fold_variables(state, 1))               # fold 1 holds out subject 2
  untrained = run_leakage(dataclasses.replace(cfg, checkpoint_dir=None, clients=(2,)), dataset=ds)
  rows = trained.batch_client == trained.subject_ids.index(2)
  only_2 = run_leakage(dataclasses.replace(cfg, clients=(2,)), dataset=ds)    # LLG* estimated for fold 1 alone
  for attack in cfg.attacks:
    np.testing.assert_array_equal(trained.pred_counts[attack][rows], alone.pred_counts[attack])
    np.testing.assert_array_equal(only_2.pred_counts[attack], alone.pred_counts[attack])
  assert not np.array_equal(trained.pred_counts["ilrg"][rows], untrained.pred_counts["ilrg"])


def test_missing_trained_models_name_the_fix(tmp_path):
  from jaxleak.runs.leakage import LeakageConfig, run_leakage
  with pytest.raises(FileNotFoundError, match="train_models.py"):
    run_leakage(LeakageConfig(dataset="synthetic_tiny", checkpoint_dir=str(tmp_path)))
