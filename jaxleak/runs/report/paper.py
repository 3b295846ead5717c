"""The papers' own numbers, where their text gives them, to be drawn beside ours and labelled as theirs.

Eavesdrop (Wang et al.): Tables III-VI as printed (success rates, %), and the points of Figs. 6 and 8 that the
text states. The HAR paper prints no numeric table we could extract (spec 9); its precursor thesis' Table B.1
(Hopp 2025, LLBG, FedSGD, N = 100, real WEAR/Wetlab; most likely the original LLBG, our `llbg_original`) is here.
"""
from __future__ import annotations

EAVESDROP_LABELS = tuple(range(10))

#: Table III: Class Sniffing success rate (%) per label; (dataset, model) -> [C].
TABLE_III = {
    ("MNIST", "MLP"): [94, 97, 95, 98, 99, 93, 94, 96, 97, 95],
    ("MNIST", "CNN"): [96, 97, 98, 93, 96, 95, 95, 96, 98, 94],
    ("CIFAR10", "LeNet5"): [92, 94, 97, 99, 98, 93, 96, 98, 99, 96],
    ("CIFAR10", "Resnet18"): [93, 97, 97, 94, 97, 95, 96, 93, 98, 97],
    ("Fer2013", "Resnet18"): [99, 94, 95, 94, 97, 98, 98],
    ("HAM10000", "Resnet18"): [93, 97, 98, 98, 98, 96, 95],
}

#: Table IV: Quantity Inference success rate (%, alpha = 1) per label.
TABLE_IV = {
    ("MNIST", "MLP"): [91, 91, 94, 93, 93, 94, 92, 97, 96, 92],
    ("MNIST", "CNN"): [95, 96, 98, 98, 100, 95, 95, 100, 100, 96],
    ("CIFAR10", "LeNet5"): [96, 94, 98, 96, 96, 92, 94, 97, 94, 94],
    ("CIFAR10", "Resnet18"): [92, 95, 94, 93, 95, 92, 98, 93, 95, 96],
    ("Fer2013", "Resnet18"): [97, 92, 100, 100, 98, 95, 98],
    ("HAM10000", "Resnet18"): [95, 93, 94, 95, 93, 94, 97],
}

#: Table V: Whole Determination success rate (%) at the middle (~50 % accuracy) and late (> 85 %) stage.
TABLE_V = {
    ("MNIST", "MLP"): (95, 100), ("MNIST", "CNN"): (95, 100), ("CIFAR10", "LeNet5"): (90, 95),
    ("CIFAR10", "Resnet18"): (95, 100), ("Fer2013", "Resnet18"): (95, 95), ("HAM10000", "Resnet18"): (95, 95),
}

#: Table VI: compression rate -> (Quantity Inference success %, aborting rate %), MNIST CNN.
TABLE_VI = {0.0: (96, 0), 0.1: (95, 3), 0.2: (96, 10), 0.3: (97, 20), 0.4: (94, 28), 0.5: (95, 37)}

#: Points of Figs. 6-9 stated in the text (MNIST CNN, Quantity Inference alpha = 1, %): field -> {value: %}.
FIGURE_POINTS = {
    "local_batch_size": {20: 94},                       # Fig. 6: "94% with batch size at 20" (bottom 82 %, x not given)
    "fraction": {0.1: 99, 0.5: 88},                     # Fig. 8: "from 99% to 88%" as P goes 0.1 -> 0.5 (Metric_1)
}

#: Our model name -> the paper's, for the MNIST rows.
MODEL_NAMES = {"mlp": "MLP", "cnn": "CNN"}

#: Thesis Table B.1: (model, state, dataset, sampling) -> (LnAcc %, LeAcc %); LLBG, FedSGD, N = 100.
THESIS_B1 = {
    ("deepconvlstm", "untrained", "wear", "balanced"): (100.0, 100.0),
    ("deepconvlstm", "untrained", "wear", "sequential"): (100.0, 100.0),
    ("deepconvlstm", "untrained", "wear", "shuffle"): (100.0, 100.0),
    ("deepconvlstm", "trained", "wear", "balanced"): (93.26, 93.78),
    ("deepconvlstm", "trained", "wear", "sequential"): (66.10, 69.54),
    ("deepconvlstm", "trained", "wear", "shuffle"): (65.77, 93.71),
    ("deepconvlstm", "untrained", "wetlab", "balanced"): (100.0, 100.0),
    ("deepconvlstm", "untrained", "wetlab", "sequential"): (100.0, 100.0),
    ("deepconvlstm", "untrained", "wetlab", "shuffle"): (100.0, 100.0),
    ("deepconvlstm", "trained", "wetlab", "balanced"): (78.81, 84.45),
    ("deepconvlstm", "trained", "wetlab", "sequential"): (87.01, 91.53),
    ("deepconvlstm", "trained", "wetlab", "shuffle"): (85.01, 82.45),
    ("tinyhar", "untrained", "wear", "balanced"): (97.46, 99.65),
    ("tinyhar", "untrained", "wear", "sequential"): (99.28, 99.54),
    ("tinyhar", "untrained", "wear", "shuffle"): (97.50, 98.33),
    ("tinyhar", "trained", "wear", "balanced"): (76.27, 88.18),
    ("tinyhar", "trained", "wear", "sequential"): (64.47, 85.36),
    ("tinyhar", "trained", "wear", "shuffle"): (59.97, 90.32),
    ("tinyhar", "untrained", "wetlab", "balanced"): (97.47, 99.99),
    ("tinyhar", "untrained", "wetlab", "sequential"): (98.95, 99.79),
    ("tinyhar", "untrained", "wetlab", "shuffle"): (97.84, 92.35),
    ("tinyhar", "trained", "wetlab", "balanced"): (86.19, 97.26),
    ("tinyhar", "trained", "wetlab", "sequential"): (86.78, 96.56),
    ("tinyhar", "trained", "wetlab", "shuffle"): (86.25, 84.05),
}


def thesis_dataset(dataset: str) -> str | None:
  """The thesis' dataset for ours: wear/wetlab, and their synthetic stand-ins (shape only, labelled as such)."""
  base = dataset.removeprefix("synthetic_")
  return base if base in ("wear", "wetlab") else None
