"""The HAR reference's per-batch procedure, written again in PyTorch (our own code, from the spec's description).

What `benchmarks/reference_way.py` times against jaxleak: eager PyTorch, one batch at a time (spec 3.2):
per-batch global min-max scaling; for EVERY attack a fresh train-mode forward and backward of the whole model;
the attacks as the reference computes them (Python loops over classes and labels, spec 2.1-2.6, 2.10); LLG*
with its 2C dummy passes per batch (spec 2.2); optionally (`reconstruction=True`) the one iteration of breaching's
optimisation-based data reconstruction that the reference runs after every attack and then discards (spec 2.10,
`reconstruction_step`). Not reproduced: the reference's data loading (every attack re-reads and re-windows the
subjects' CSV files) and its per-batch CSV writes and Python-loop metrics.

The model is DeepConvLSTM in the reference's NCHW layout (input (B, 1, 50, ch), Conv2d kernels (9, 1)), and
`load_flax_params` copies a jaxleak DeepConvLSTM's parameters into it, so both compute the same function
(tests/test_reference_way.py checks logits and head gradients).

Requires the optional extra `torch` (pip install -e ".[torch]", CPU wheel torch==2.13.0).
"""
from __future__ import annotations

import copy

import numpy as np

try:
  import torch
  from torch import nn
except ImportError as e:                                    # pragma: no cover - exercised without the extra
  raise ImportError("the PyTorch reference benchmark needs the optional extra 'torch': "
                    "pip install -e \".[torch]\" (CPU wheel torch==2.13.0)") from e

ATTACKS = ("llg", "llg_star", "ebi", "llbg", "ilrg")
#: jaxleak's attack that computes what each reference attack computes (registry.HAR_REFERENCE_ATTACKS).
JAXLEAK_TWIN = {"llg": "llg_har", "llg_star": "llg_star_har", "ebi": "ebi", "llbg": "llbg",
                "ilrg": "ilrg_uniform"}


class DeepConvLSTM(nn.Module):
  """Spec 7.1 in PyTorch: 4 x Conv2d(kernel (9, 1)) + ReLU, time-major flatten c*64+f, LSTM(128) x 2, last step,
  Dropout(0.5), Linear(128, C)."""

  def __init__(self, channels: int, num_classes: int, filters: int = 64, hidden: int = 128):
    super().__init__()
    self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else filters, filters, (9, 1)) for i in range(4)])
    self.lstm = nn.LSTM(channels * filters, hidden, num_layers=2)
    self.dropout = nn.Dropout(0.5)
    self.head = nn.Linear(hidden, num_classes)

  def features(self, x):                                    # x: (B, 1, T, ch)
    for conv in self.convs:
      x = torch.relu(conv(x))
    b, f, t, ch = x.shape
    x = x.permute(2, 0, 3, 1).reshape(t, b, ch * f)        # (T', B, ch*F), index c*F + f
    out, _ = self.lstm(x)
    return self.dropout(out[-1])

  def forward(self, x):
    return self.head(self.features(x))


def load_flax_params(model: DeepConvLSTM, params: dict) -> DeepConvLSTM:
  """Copies a jaxleak DeepConvLSTM's `params` into `model` (same function, PyTorch layout)."""
  t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))
  with torch.no_grad():
    for i, conv in enumerate(model.convs):
      k = np.asarray(params[f"Conv_{i}"]["kernel"])        # (9, in, out)
      conv.weight.copy_(t(np.transpose(k, (2, 1, 0))[..., None]))
      conv.bias.copy_(t(params[f"Conv_{i}"]["bias"]))
    for layer in range(2):
      p = params[f"TorchLSTM_{layer}"]
      getattr(model.lstm, f"weight_ih_l{layer}").copy_(t(np.asarray(p["w_ih"]).T))
      getattr(model.lstm, f"weight_hh_l{layer}").copy_(t(np.asarray(p["w_hh"]).T))
      getattr(model.lstm, f"bias_ih_l{layer}").copy_(t(p["b_ih"]))
      getattr(model.lstm, f"bias_hh_l{layer}").copy_(t(p["b_hh"]))
    model.head.weight.copy_(t(np.asarray(params["head"]["kernel"]).T))
    model.head.bias.copy_(t(params["head"]["bias"]))
  return model


def minmax(x: torch.Tensor) -> torch.Tensor:
  """Per-batch global min-max scaling (spec 3.2 step 2)."""
  return (x - x.min()) / (x.max() - x.min())


def full_gradients(model: DeepConvLSTM, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
  """Train-mode forward + backward of the whole model: the gradient of every parameter, in `parameters()` order,
  the head's weight [C, D] and bias [C] last (spec 3.2 steps 3-4)."""
  model.train()
  model.zero_grad(set_to_none=True)
  loss = nn.functional.cross_entropy(model(x), y)
  return torch.autograd.grad(loss, list(model.parameters()))


def full_gradient(model: DeepConvLSTM, x: torch.Tensor, y: torch.Tensor):
  """`full_gradients`' last layer: (G_W [C, D], g_b [C])."""
  grads = full_gradients(model, x, y)
  return grads[-2], grads[-1]


def reconstruction_step(model: DeepConvLSTM, grads, counts: np.ndarray, input_shape: tuple[int, int]):
  """What the reference's attack wrapper runs after every label attack and discards (spec 2.10): one iteration
  of breaching's optimisation-based reconstruction with its default settings.

  The server's copy of the model (a deep copy, eval mode: the payload carries the model's buffers), a
  random-normal candidate x [N, 1, T, ch] labelled with the attack's counts i64[C], one Adam step (step size 1.0)
  on the Euclidean gradient-matching objective 0.5 sum_p ||dL(x)/dp - grads_p||^2, which differentiates through
  the model's gradient (a second-order backward pass), then the trial scored by the same objective once more,
  and the candidate min-max scaled as the reference's driver does. Returns (candidate before the step,
  candidate after it, scaled result), all [N, 1, T, ch], for the tests; the benchmark throws them away.
  """
  rec = copy.deepcopy(model).eval()
  params = list(rec.parameters())
  labels = torch.from_numpy(np.repeat(np.arange(len(counts)), counts))
  candidate = torch.randn((int(counts.sum()), 1) + tuple(input_shape), requires_grad=True)
  start = candidate.detach().clone()
  optimizer = torch.optim.Adam([candidate], lr=1.0)

  def objective():
    loss = nn.functional.cross_entropy(rec(candidate), labels)
    rec_grads = torch.autograd.grad(loss, params, create_graph=True)
    return 0.5 * sum(((a - b) ** 2).sum() for a, b in zip(rec_grads, grads))

  def closure():
    optimizer.zero_grad()
    value = objective()
    value.backward(inputs=[candidate])
    return value

  optimizer.step(closure)
  objective()                                               # the trial's score (one trial: its value is unused)
  out = candidate.detach()
  return start, out, (out - out.min()) / (out.max() - out.min())


def llg_star_estimates(model: DeepConvLSTM, n: int, input_shape: tuple[int, int], num_classes: int):
  """LLG*'s m and s from 2C dummy passes in eval mode, gradients w.r.t. the head weight only (spec 2.2)."""
  model.eval()
  c = num_classes
  w = model.head.weight
  m = 0.0
  for k in range(c):
    x = torch.randn((n, 1) + input_shape)
    loss = nn.functional.cross_entropy(model(x), torch.full((n,), k))
    m += float(torch.autograd.grad(loss, [w])[0].sum()) * (1 + 1 / c) / n / c
  s = torch.zeros(c)
  for k in range(c):
    x = torch.randn((c - 1, 1) + input_shape)
    labels = torch.tensor([j for j in range(c) if j != k])
    loss = nn.functional.cross_entropy(model(x), labels)
    s[k] += float(torch.autograd.grad(loss, [w])[0].sum()) / (c - 1)
  return m, s


def _finish(labels: list[int], n: int, c: int) -> np.ndarray:
  """Spec 2.10: pad with uniformly random labels, keep the first N; returns counts i64[C]."""
  while len(labels) < n:
    labels.append(int(torch.randint(0, c, (1,))))
  return np.bincount(np.asarray(labels[:n], dtype=np.int64), minlength=c)


def _llg_labels(row_sums: torch.Tensor, n: int, m: float, s=None) -> list[int]:
  g = row_sums.clone()
  c = g.shape[0]
  labels = []
  for idx in range(c):
    if g[idx] < 0:
      labels.append(idx)
      g[idx] -= m
  if s is not None:
    g = g - s
  while len(labels) < n:
    labels.append(int(torch.argmin(g)))
    g[c - 1] -= m                                           # the reference's stale loop index (spec 2.1 step 5)
  return labels


def llg(gw: torch.Tensor, gb: torch.Tensor, n: int) -> np.ndarray:
  r = gw.sum(dim=1)
  c = r.shape[0]
  m = float(r[r < 0].sum()) * (1 + 1 / c) / n
  return _finish(_llg_labels(r, n, m), n, c)


def llg_star(gw: torch.Tensor, gb: torch.Tensor, n: int, m: float, s: torch.Tensor) -> np.ndarray:
  return _finish(_llg_labels(gw.sum(dim=1), n, m, s), n, gw.shape[0])


def _bias_attack(gb: torch.Tensor, n: int, stage1, impact) -> np.ndarray:
  """EBI and LLBG as the reference runs them (spec 2.3, 2.4): stage 1 = stage1(b, valid) labels; every valid
  class raised by the impact m = impact(b, valid); stage 2 appends argmin(b) and raises it by |m| until N."""
  b = gb.clone()
  c = b.shape[0]
  valid = [k for k in range(c) if b[k] < 0]
  labels = stage1(b, valid)
  m = impact(b, valid)
  for k in valid:
    b[k] -= m
  while len(labels) < n:
    sel = int(torch.argmin(b))
    labels.append(sel)
    b[sel] -= m
  return _finish(labels, n, c)


def ebi(gw: torch.Tensor, gb: torch.Tensor, n: int) -> np.ndarray:
  """Stage 1: the valid classes, most negative first, at most N; m = sum of the negative entries / N."""
  return _bias_attack(gb, n, lambda b, valid: sorted(valid, key=lambda k: float(b[k]))[:min(n, len(valid))],
                      lambda b, valid: float(sum(b[k] for k in valid)) / n if valid else 0.0)


def llbg(gw: torch.Tensor, gb: torch.Tensor, n: int) -> np.ndarray:
  """llbgAVG: stage 1 all valid classes in index order; m = LLG's impact (1 + 1/C) sum(neg) / N."""
  return _bias_attack(gb, n, lambda b, valid: list(valid),
                      lambda b, valid: float(b[b < 0].sum()) * (1 + 1 / b.shape[0]) / n)


def bias_corrected(gw: torch.Tensor, gb: torch.Tensor, n: int) -> np.ndarray:
  """breaching's `bias-corrected` (spec 2.7; not in the timed five): stage 1 all valid classes in index order,
  EBI's m = sum(neg) / N. A list longer than N keeps its first N (`_finish`), as jaxleak does."""
  return _bias_attack(gb, n, lambda b, valid: list(valid),
                      lambda b, valid: float(sum(b[k] for k in valid)) / n if valid else 0.0)


def gcd(gw: torch.Tensor, gb: torch.Tensor, n: int) -> np.ndarray:
  """The HAR code's older `gcd` (spec 2.7; not in the timed five): one candidate impact per position of g_b sorted
  descending (the best-scoring difference of two entries so far), checked to divide every entry, else EBI's m0;
  stage 1 all valid classes unraised; stage 2 raises the selected class by the candidate at its class index."""
  b = gb.clone()
  c = b.shape[0]
  labels = [k for k in range(c) if b[k] < 0]
  m0 = b[b < 0].sum() / n
  entries = [float(v) for v in torch.sort(b, descending=True).values]
  best, best_score, candidates = 0.0, float("inf"), []
  for first in entries:
    for second in entries:
      d = first - second
      if round(d, 2) == 0:
        continue
      score = sum(torch.remainder(b, d))             # Python's sum: left to right, in float32
      if score < best_score:
        best, best_score = d, float(score)
    candidates.append(-best)

  def divides(candidate):
    return all(abs(float(torch.remainder(v, candidate))) <= 0.01 for v in b)      # by 0: NaN, so no

  candidates = [cand if divides(cand) else float(m0) for cand in candidates]
  candidates = [float(m0) if cand > 0 else cand for cand in candidates]
  while len(labels) < n:
    sel = int(torch.argmin(b))
    labels.append(sel)
    b[sel] -= candidates[sel]
  return _finish(labels, n, c)


def yin(gw: torch.Tensor, gb: torch.Tensor, n: int, return_unpadded: bool = False):
  """Yin et al. as breaching runs it (spec 2.7; not in the timed five): the row-wise minimum of G_W [C, D], classes
  in ascending order of it, the first min(N, C) once each; the rest random (`return_unpadded`: before that)."""
  order = torch.argsort(gw.min(dim=1).values, stable=True)
  labels = [int(k) for k in order[:n]]
  if return_unpadded:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=gw.shape[0])
  return _finish(labels, n, gw.shape[0])


def ilrg(gw: torch.Tensor, gb: torch.Tensor, n: int, return_unpadded: bool = False):
  """Spec 2.6: float64 pinv of the uniform-probability system; `return_unpadded` gives the counts before the
  random padding (for comparisons)."""
  b = gb.detach().double().numpy()
  c = b.shape[0]
  a = np.vstack([np.ones((1, c)), np.full((c, c), 1.0 / c) - np.eye(c)])
  x = np.linalg.pinv(a) @ np.concatenate([[n], n * b])
  r = np.round(np.maximum(x, 0.0))
  r[r > n] = 0
  labels = []
  for k in range(c):
    take = min(int(r[k]), n - len(labels))
    labels.extend([k] * take)
  if return_unpadded:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=c)
  return _finish(labels, n, c)


def attack(name: str, gw: torch.Tensor, gb: torch.Tensor, n: int, model=None, input_shape=None) -> np.ndarray:
  """One reference attack on one batch's gradients (G_W [C, D], g_b [C]); LLG* runs its dummy passes."""
  if name == "llg_star":
    m, s = llg_star_estimates(model, n, input_shape, gw.shape[0])
    return llg_star(gw, gb, n, m, s)
  return {"llg": llg, "ebi": ebi, "llbg": llbg, "ilrg": ilrg}[name](gw, gb, n)


def reference_batch(model: DeepConvLSTM, windows: np.ndarray, labels: np.ndarray,
                    reconstruction: bool = False) -> dict[str, np.ndarray]:
  """The reference's work for one batch (windows f32[N, T, ch], labels [N]): every attack with its own fresh
  full-model gradient, and with `reconstruction` the discarded reconstruction step after each attack.
  Returns attack -> counts."""
  n, t, ch = windows.shape
  x = minmax(torch.from_numpy(np.array(windows, np.float32)).unsqueeze(1))      # a writable copy
  y = torch.from_numpy(np.array(labels, np.int64))
  out = {}
  for name in ATTACKS:
    grads = full_gradients(model, x, y)
    out[name] = attack(name, grads[-2], grads[-1], n, model, (t, ch))
    if reconstruction:
      reconstruction_step(model, grads, out[name], (t, ch))
  return out
