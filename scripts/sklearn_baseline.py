#!/usr/bin/env python3
"""kiln's MLP against scikit-learn's MLPClassifier on the repo's real data sets (issue 3).

Both get the same hidden sizes, optimizer (Adam), learning rate, batch size, epoch budget,
standardised features and train/val/test split; each runs with ten seeds, and the table gives
the mean and range of test accuracy. kiln runs twice: with its defaults (all epochs, best epoch by
validation loss), and with scikit-learn's own stopping rule added (stop once the training loss
has not improved by 1e-4 for 10 epochs: MLPClassifier's `tol` and `n_iter_no_change`). scikit-learn is not a kiln dependency: install it into the
venv first (`.venv/bin/pip install scikit-learn`).

    .venv/bin/python scripts/sklearn_baseline.py [path/to/kiln]
"""
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

REPO = Path(__file__).resolve().parent.parent
HIDDEN = (32, 16)
EPOCHS, BATCH, LR = 200, 16, 0.01
SEEDS = range(int(os.environ.get("KILN_BASELINE_SEEDS", "10")))
# kiln's own settings beyond the shared ones (see docs/TRAINING.md).
KILN_EXTRA = os.environ.get("KILN_BASELINE_ARGS", "").split()
# MLPClassifier's defaults tol=1e-4, n_iter_no_change=10, as kiln flags.
SKLEARN_STOPPING = ["--patience", "10", "--early-stop-metric", "train_loss", "--min-delta", "1e-4"]


def load(path):
    rows = [line.strip().split(",") for line in open(path) if line.strip()]
    header, body = rows[0], rows[1:]
    target = header.index("label")
    x = np.array([[float(v) for i, v in enumerate(r) if i != target] for r in body])
    y = np.array([r[target] for r in body])
    return x, y


def sklearn_accuracy(d, seed):
    (xt, yt), (xv, yv), (xs, ys) = (load(d / f"{s}.csv") for s in ("train", "val", "test"))
    scaler = StandardScaler().fit(xt)
    clf = MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        solver="adam",
        learning_rate_init=LR,
        batch_size=BATCH,
        max_iter=EPOCHS,
        random_state=seed,
        # The same role as kiln's validation set: keep the best epoch on held-out rows.
        early_stopping=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(xt), yt)
    return float((clf.predict(scaler.transform(xs)) == ys).mean())


def kiln_accuracy(kiln, d, seed, extra=()):
    with tempfile.TemporaryDirectory() as out:
        args = [
            kiln, "train", "--data", d / "train.csv", "--val-data", d / "val.csv",
            "--test-data", d / "test.csv", "--out", out + "/run", "--epochs", EPOCHS,
            "--batch-size", BATCH, "--lr", LR, "--hidden", ",".join(map(str, HIDDEN)),
            "--seed", seed, "--checkpoint-every", 0, "--json", *KILN_EXTRA, *extra,
        ]
        r = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=True)
        return json.loads(r.stdout)["test"]["accuracy"]


def main():
    kiln = sys.argv[1] if len(sys.argv) > 1 else str(REPO / "target/release/kiln")
    print("| data set | test rows | kiln, defaults | kiln, scikit-learn's stopping rule "
          "| scikit-learn |")
    print("|----------|----------:|---------------:|-----------------------------------:"
          "|-------------:|")
    for name in os.environ.get("KILN_BASELINE_SETS", "iris,wine,digits").split(","):
        d = REPO / "data" / name
        k = [kiln_accuracy(kiln, d, s) for s in SEEDS]
        ks = [kiln_accuracy(kiln, d, s, SKLEARN_STOPPING) for s in SEEDS]
        s = [sklearn_accuracy(d, s) for s in SEEDS]
        rows = len(load(d / "test.csv")[1])
        fmt = lambda v: f"{np.mean(v):.4f} ({min(v):.4f}–{max(v):.4f})"
        print(f"| {name} | {rows} | {fmt(k)} | {fmt(ks)} | {fmt(s)} |", flush=True)

if __name__ == "__main__":
    main()
