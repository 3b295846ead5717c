"""Training the global model of every leave-one-subject-out fold at once (spec 7.4), vmapped over folds.

Per fold: train on all other subjects' raw windows (no min-max), Adam(lr 1e-4) with L2 weight decay 1e-6 added to
the gradient (PyTorch Adam's weight_decay), step decay x0.9 every 10 epochs, class-weighted cross-entropy with
sklearn's 'balanced' weights over the fold's training windows, batch 100, shuffled every epoch, drop-last.

All folds share one compiled step: fold f's batch indices come from its own training pool; folds with fewer
batches than the largest get masked (no-op) steps at the end of the epoch, so a fold trained in the vmapped run
equals the same fold trained alone (tested).

`fold_execution`: 'vmap' runs every fold in one vmapped step; 'sequential' runs the same single-fold step once per
fold (one compilation). Same results (tested). On XLA:CPU, vmap over folds turns each convolution into a grouped
convolution and measured 3x (TinyHAR) / 1.2x (DeepConvLSTM) slower than sequential (BUILD_NOTES.md), so
'auto' picks 'sequential' on CPU and 'vmap' on accelerators. Each fold's shuffles depend only on (seed, fold's
held-out subject, epoch). A checkpoint (jaxleak.storage: one self-verifying file, flax msgpack, never pickle) is
written atomically after every epoch; a killed run resumes, and a run asked for more epochs than are stored
continues from there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from jaxleak import gpu_numerics, storage
from jaxleak.runs import fields
from jaxleak.data.dataset import WindowedClients
from jaxleak.federated.apply import class_weighted_ce, train_loss


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  epochs: int = 100
  batch_size: int = 100
  lr: float = 1e-4
  weight_decay: float = 1e-6
  lr_decay: float = 0.9
  lr_step_epochs: int = 10
  class_weighted: bool = True
  seed: int = 1

  def __post_init__(self):
    for name in ("epochs", "batch_size", "lr_step_epochs"):
      fields.integer(name, getattr(self, name))
    fields.seed("seed", self.seed)
    fields.boolean("class_weighted", self.class_weighted)
    for name in ("lr", "lr_decay"):
      value = getattr(self, name)
      if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}.")
    if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
      raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}.")


class FoldState(NamedTuple):
  """Training state; every leaf has a leading fold axis when stacked."""
  params: dict
  batch_stats: dict
  opt_state: optax.OptState


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """sklearn 'balanced': n / (n_present_classes * n_c) for present classes, 0 for absent ones."""
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  present = counts > 0
  w = np.zeros(num_classes, np.float64)
  w[present] = len(labels) / (present.sum() * counts[present])
  return w.astype(np.float32)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """Adam direction with L2 weight decay added to the gradient; the learning rate is applied by the step.

  The rate is an argument of the step, set per epoch (`learning_rate`), because a fold's optimizer step count
  only advances on its active steps: a step-count schedule would decay folds with fewer batches late.
  """
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.scale_by_adam())


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
  """PyTorch StepLR: lr * decay ** (epoch // step), epoch counted from 0."""
  return cfg.lr * cfg.lr_decay ** (epoch // cfg.lr_step_epochs)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation):
  """One fold's step: (state, x [B, T, ch], y [B], weights [C], active bool, key, lr) -> (state, loss)."""
  def step(state: FoldState, x, y, weights, active, key, lr):
    model_state = {"batch_stats": state.batch_stats} if state.batch_stats else {}
    loss_fn = train_loss(model, model_state, x, y, key,
                         reduce=lambda logits, labels: class_weighted_ce(logits, labels, weights))
    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    stats = new_state.get("batch_stats", {})
    direction, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, d: p - lr * d, state.params, direction)
    new = FoldState(params, stats, opt_state)
    keep = lambda n, o: jnp.where(active, n, o)
    return jax.tree.map(keep, new, state), jnp.where(active, loss, jnp.nan)
  return step


@dataclasses.dataclass(frozen=True)
class Folds:
  """LOSO folds over the clients of a WindowedClients: fold f holds out client `held_out[f]`."""
  held_out: tuple[int, ...]                     # client indices

  def train_pool(self, clients: WindowedClients, f: int) -> np.ndarray:
    h = self.held_out[f]
    return np.concatenate([np.arange(clients.offsets[k], clients.offsets[k + 1])
                           for k in range(clients.num_clients) if k != h])

  def test_pool(self, clients: WindowedClients, f: int) -> np.ndarray:
    h = self.held_out[f]
    return np.arange(clients.offsets[h], clients.offsets[h + 1])


def epoch_batches(clients: WindowedClients, folds: Folds, cfg: TrainConfig, epoch: int, steps: int):
  """Per-epoch indices i32[steps, F, B] and active bool[steps, F] (host)."""
  idx = np.zeros((steps, len(folds.held_out), cfg.batch_size), np.int32)
  active = np.zeros((steps, len(folds.held_out)), bool)
  for f in range(len(folds.held_out)):
    pool = folds.train_pool(clients, f)
    subject = clients.subject_ids[folds.held_out[f]]
    rng = np.random.default_rng([cfg.seed, subject, epoch])
    order = pool[rng.permutation(len(pool))]
    nb = len(order) // cfg.batch_size
    idx[:nb, f] = order[:nb * cfg.batch_size].reshape(nb, cfg.batch_size)
    active[:nb, f] = True
  return idx, active


def steps_per_epoch(clients: WindowedClients, folds: Folds, cfg: TrainConfig) -> int:
  return max(len(folds.train_pool(clients, f)) // cfg.batch_size for f in range(len(folds.held_out)))


def init_state(model: nn.Module, tx, key, window: int, channels: int, num_folds: int) -> FoldState:
  """Every fold starts from the same init (the reference re-seeds with the same seed for every split)."""
  variables = model.init({"params": key}, jnp.zeros((1, window, channels)), train=False)
  one = FoldState(variables["params"], variables.get("batch_stats", {}), tx.init(variables["params"]))
  return jax.tree.map(lambda a: jnp.broadcast_to(a, (num_folds,) + a.shape), one)


@functools.lru_cache(maxsize=None)
def _predict_fn(model: nn.Module):
  """One compiled eval-mode prediction function per model (not one per epoch)."""
  return jax.jit(lambda p, s, x: jnp.argmax(model.apply({"params": p, **({"batch_stats": s} if s else {})}, x,
                                                        train=False), -1))


def evaluate(model: nn.Module, state: FoldState, clients: WindowedClients, folds: Folds,
             num_classes: int) -> dict:
  """Held-out accuracy and macro F1 per fold (eval mode, raw windows, fixed chunks of 1024 windows)."""
  fwd = _predict_fn(model)
  chunk = 1024
  acc, f1 = [], []
  for f in range(len(folds.held_out)):
    pool = folds.test_pool(clients, f)
    p, s = jax.tree.map(lambda a: a[f], (state.params, state.batch_stats))
    padded = np.resize(pool, -(-len(pool) // chunk) * chunk)            # repeats pad the last chunk
    pred = np.concatenate([np.asarray(fwd(p, s, clients.windows[padded[i:i + chunk]]))
                           for i in range(0, len(padded), chunk)])[:len(pool)]
    true = clients.labels[pool]
    acc.append(float(np.mean(pred == true)))
    f1.append(macro_f1(true, pred, num_classes))
  return {"accuracy": acc, "macro_f1": f1}


def macro_f1(true: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
  """Mean F1 over classes present in true or pred (sklearn's macro average)."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (true, pred), 1)
  tp = np.diag(cm).astype(float)
  p_den, t_den = cm.sum(0), cm.sum(1)
  labels = (p_den + t_den) > 0
  f1 = np.where(p_den + t_den > 0, 2 * tp / np.maximum(p_den + t_den, 1), 0.0)
  return float(f1[labels].mean())


def checkpoint_config(model: nn.Module, cfg: TrainConfig, clients: WindowedClients, folds: Folds,
                      dataset: str = "") -> dict:
  """What a fold-training checkpoint is tied to: everything but the number of epochs (so more epochs resume), and
  the matmul precision where it is not float32 (`gpu_numerics.key_fields`: epochs at TF32 never resume float32 ones)."""
  train = dataclasses.asdict(cfg)
  train.pop("epochs")
  return {"dataset": dataset, "model": repr(model), "train": train, "subjects": list(clients.subject_ids),
          "held_out_subjects": [clients.subject_ids[h] for h in folds.held_out],
          "num_windows": int(len(clients.labels)), "data": clients.subject_digests(), **gpu_numerics.key_fields()}


def check_training_data(path: str, stored: dict, clients: WindowedClients) -> bool:
  """Refuses (ValueError naming the subjects, the counts and the fix) to use models trained on other data.

  `stored` is the checkpoint header's config; each subject of `clients` must have had the same windows and labels
  when the models were trained (`WindowedClients.subject_digests`). Returns False, checking nothing, for a
  checkpoint written before the digests were recorded.
  """
  trained_on = stored.get("data")
  if not isinstance(trained_on, dict):
    return False
  here = clients.subject_digests()
  differ = [s for s in here if trained_on.get(s) != here[s]]
  if differ:
    def count(d, s):
      return d[s].split(":")[0] + " windows" if s in d else "absent"
    eg = "; ".join(f"subject {s}: {count(trained_on, s)} there, {count(here, s)} here" for s in differ[:3])
    raise ValueError(
        f"{path} holds models trained on other data than this run's: {len(differ)} of {len(here)} subjects differ in "
        f"their windows or labels ({eg}). Train and attack with the same --dataset, --data_dir, --synthetic_scale "
        "and --seed: retrain with experiments/train_models.py for this data, or point --checkpoint_dir at the "
        "checkpoint trained on it.")
  return True


FOLD_EXECUTIONS = ("auto", "vmap", "sequential")
#: Seconds between progress lines inside an epoch (an epoch of DeepConvLSTM on WEAR-sized data takes an hour on
#: 2 CPU cores); shorter epochs print only their summary line.
PROGRESS_EVERY_S = 60.0


def train_folds(model: nn.Module, clients: WindowedClients, folds: Folds, num_classes: int, cfg: TrainConfig, *,
                checkpoint_path: Optional[str] = None, progress: Optional[Callable[[str], None]] = None,
                stop_after_epochs: Optional[int] = None, fold_execution: str = "auto",
                dataset_name: str = "") -> tuple[FoldState, list[dict]]:
  """Trains every fold for cfg.epochs (resuming from checkpoint_path if it holds the same run).

  Returns the stacked final state and one record per epoch run in this call (loss, held-out accuracy and macro F1
  per fold, seconds). `stop_after_epochs` ends the call early (to test resumption). A checkpoint of another
  configuration is refused with the differing fields named; one with more epochs than cfg.epochs too; a
  checkpoint another process is training into now as well (`storage.exclusive_run`).
  """
  with storage.exclusive_run(checkpoint_path, "fold training") if checkpoint_path else contextlib.nullcontext():
    return _train_folds(model, clients, folds, num_classes, cfg, checkpoint_path=checkpoint_path, progress=progress,
                        stop_after_epochs=stop_after_epochs, fold_execution=fold_execution,
                        dataset_name=dataset_name)


def _train_folds(model, clients, folds, num_classes, cfg, *, checkpoint_path, progress, stop_after_epochs,
                 fold_execution, dataset_name):
  log = progress or (lambda m: None)
  sizes = {clients.subject_ids[h]: len(folds.train_pool(clients, f)) for f, h in enumerate(folds.held_out)}
  short = {s: n for s, n in sizes.items() if n < cfg.batch_size}
  if short:
    raise ValueError(f"batch_size {cfg.batch_size} is larger than the training windows of the folds holding out "
                     f"subjects (subject: windows) {short}; lower batch_size (batches are drop-last, so those folds "
                     f"would never take a step).")
  steps = steps_per_epoch(clients, folds, cfg)
  tx = make_optimizer(cfg)
  key = jax.random.key(cfg.seed)
  state = init_state(model, tx, key, clients.windows.shape[1], clients.windows.shape[2], len(folds.held_out))
  ckpt = (storage.Checkpointer(checkpoint_path, checkpoint_config(model, cfg, clients, folds, dataset_name),
                                what="fold training") if checkpoint_path else None)
  start = 0
  restored = ckpt.restore(state) if ckpt else None
  if restored is not None:
    state, meta = restored
    start = int(meta["epochs_done"])
    if start > cfg.epochs:
      raise ValueError(f"checkpoint {checkpoint_path} already holds {start} epochs, more than the {cfg.epochs} asked "
                       f"for; ask for --epochs={start} (or more) or use another --checkpoint_dir.")
    log(f"resuming from {checkpoint_path} after epoch {start}")
  weights = jnp.stack([jnp.asarray(class_weights(clients.labels[folds.train_pool(clients, f)], num_classes)
                                   if cfg.class_weighted else np.ones(num_classes, np.float32))
                       for f in range(len(folds.held_out))])
  if fold_execution not in FOLD_EXECUTIONS:
    raise ValueError(f"unknown fold_execution {fold_execution!r}; valid: {', '.join(FOLD_EXECUTIONS)}.")
  if fold_execution == "auto":
    fold_execution = "sequential" if jax.default_backend() == "cpu" else "vmap"
  vstep = jax.jit(jax.vmap(make_train_step(model, tx), in_axes=(0, 0, 0, 0, 0, 0, None)), donate_argnums=0)
  one_step = jax.jit(make_train_step(model, tx), donate_argnums=0)
  num_folds = len(folds.held_out)
  history = []
  subjects = jnp.asarray([clients.subject_ids[h] for h in folds.held_out])
  for epoch in range(start, cfg.epochs):
    if stop_after_epochs is not None and epoch - start >= stop_after_epochs:
      break
    t0 = time.perf_counter()
    idx, active = epoch_batches(clients, folds, cfg, epoch, steps)
    losses, lr = [], jnp.float32(learning_rate(cfg, epoch))
    # Sequential execution keeps one state per fold for the whole epoch and stacks them only at its end.
    per_fold = None if fold_execution == "vmap" else [jax.tree.map(lambda a: a[f], state) for f in range(num_folds)]
    last_note = t0
    for s in range(steps):
      if progress and s and time.perf_counter() - last_note >= PROGRESS_EVERY_S:
        jax.block_until_ready(losses[-1])                       # steps are dispatched ahead: time the finished
        last_note, spent = time.perf_counter(), time.perf_counter() - t0
        log(f"epoch {epoch + 1}/{cfg.epochs}: step {s}/{steps} ({s / steps:.0%}), {spent:.0f} s, "
            f"ETA {spent / s * (steps - s):.0f} s for the epoch")
      step_key = jax.random.fold_in(jax.random.fold_in(key, epoch), s)     # independent of the fold count
      keys = jax.vmap(lambda h: jax.random.fold_in(step_key, h))(subjects)
      x, y = clients.windows[idx[s]], clients.labels[idx[s]]
      if per_fold is None:
        state, loss = vstep(state, x, y, weights, active[s], keys, lr)
      else:
        loss = []
        for f in range(num_folds):
          per_fold[f], lf = one_step(per_fold[f], x[f], y[f], weights[f], active[s, f], keys[f], lr)
          loss.append(lf)
        loss = jnp.stack(loss)
      losses.append(loss)
    if per_fold is not None:
      state = jax.tree.map(lambda *xs: jnp.stack(xs), *per_fold)
    diverged = nonfinite_folds(state.params, num_folds)
    if diverged:
      kept = f"; {checkpoint_path} keeps epoch {epoch}" if ckpt and epoch else ""
      raise ValueError(f"training diverged in epoch {epoch + 1}: the weights of the folds holding out subjects "
                       f"{[clients.subject_ids[folds.held_out[f]] for f in diverged]} are not finite (NaN or inf); "
                       f"lower the learning rate (--lr; it was {cfg.lr:g}) and train again{kept}.")
    ev = evaluate(model, state, clients, folds, num_classes)
    rec = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0,
           "loss": np.nanmean(np.stack([np.asarray(l) for l in losses]), axis=0).tolist(), **ev}
    history.append(rec)
    log(f"epoch {epoch + 1}/{cfg.epochs}: {rec['seconds']:.1f} s, mean held-out accuracy "
        f"{np.mean(ev['accuracy']):.3f}, macro F1 {np.mean(ev['macro_f1']):.3f}")
    if ckpt:
      ckpt.save(jax.device_get(state), {"epochs_done": epoch + 1, "last_epoch": rec, "config": dataclasses.asdict(cfg),
                                        "held_out_subjects": [clients.subject_ids[h] for h in folds.held_out]})
  return state, history


def fold_variables(state: FoldState, f: int) -> dict:
  """The Flax variables of fold f from a stacked state."""
  params, stats = jax.tree.map(lambda a: a[f], (state.params, state.batch_stats))
  return {"params": params, **({"batch_stats": stats} if stats else {})}


def load_fold_models(path: str, model: nn.Module, window: int, channels: int, *, dataset: str = "",
                     clients: Optional[WindowedClients] = None, progress: Optional[Callable[[str], None]] = None
                     ) -> tuple[dict, list[int]]:
  """Stacked Flax variables of every trained fold (leading fold axis) and each fold's held-out subject id.

  Refuses (naming the difference and the fix) a checkpoint trained on another dataset or model, or (given the
  run's `clients`) on other windows or labels of these subjects (`check_training_data`; a checkpoint too old to
  say what it was trained on is used unchecked, with a note to `progress`)."""
  try:
    header = storage.read_checkpoint_header(path)
  except FileNotFoundError:
    raise FileNotFoundError(f"no trained models at {path}: run experiments/train_models.py with the same "
                            "--dataset and --model first (or fix --checkpoint_dir).") from None
  stored = header.get("config", {})
  for field, want in (("dataset", dataset), ("model", repr(model))):
    if want and stored.get(field) and stored.get(field) != want:
      raise ValueError(f"{path} holds models trained with {field} {one_line(stored.get(field))}, but this run uses "
                       f"{one_line(want)}; "
                       "train them with experiments/train_models.py for this dataset and model, or point "
                       "--checkpoint_dir at the matching checkpoint.")
  if clients is not None and not check_training_data(path, stored, clients) and progress:
    progress(f"note: {path} predates the record of the data it was trained on; not checked against this run's "
             "windows (retrain to have it checked)")
  meta = header.get("meta", {})
  cfg = TrainConfig(**meta["config"])
  held = [int(s) for s in meta["held_out_subjects"]]
  # Shapes only (restoring needs the structure, not values): an eager init of every fold took ~4 s per call.
  target = jax.eval_shape(lambda: init_state(model, make_optimizer(cfg), jax.random.key(0), window, channels,
                                             len(held)))
  state, _ = storage.Checkpointer(path, stored, what="fold training").restore(target)
  diverged = nonfinite_folds(state.params, len(held))
  if diverged:
    raise ValueError(f"{path}: the models holding out subjects {[held[f] for f in diverged]} have non-finite weights "
                     f"(NaN or inf: their training diverged); train them again with a lower --lr (it was "
                     f"{cfg.lr:g}).")
  variables = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
  return variables, held


def one_line(text: str) -> str:
  """A Flax module's multi-line repr (as checkpoints record it) on one line: 'TinyHAR(num_classes=5, ...)'."""
  lines = [ln.strip() for ln in str(text).splitlines() if ln.strip() and not ln.strip().startswith("#")]
  if len(lines) < 2:
    return repr(text)
  return lines[0] + ", ".join(ln.replace(" = ", "=") for ln in lines[1:-1]) + lines[-1]


def nonfinite_folds(params, num_folds: int) -> list[int]:
  """Indices of the folds (leading axis of every leaf of `params`) with a NaN or inf weight."""
  finite = np.ones(num_folds, bool)
  for leaf in jax.tree.leaves(params):
    finite &= np.isfinite(np.asarray(leaf)).reshape(num_folds, -1).all(axis=1)
  return np.flatnonzero(~finite).tolist()


def checkpoint_path(checkpoint_dir: str) -> str:
  """The fold-training checkpoint file inside a checkpoint folder."""
  return os.path.join(checkpoint_dir, "folds.ckpt")
