#!/usr/bin/env python3
"""kiln's MLP against scikit-learn's MLPClassifier on the repo's real data sets (issue 3).

Both get the same hidden sizes, optimizer (Adam), learning rate, batch size, epoch budget,
standardised features and train/val/test rows. kiln runs twice: with its defaults (all epochs,
best epoch by validation loss), and with scikit-learn's own stopping rule added (stop once the
training loss has not improved by 1e-4 for 10 epochs: MLPClassifier's `tol` and
`n_iter_no_change`). scikit-learn never sees the validation rows. scikit-learn is not a kiln
dependency: install it into the venv first (`.venv/bin/pip install scikit-learn`).

Two comparisons:

1. The fixed split (`data/<set>/{train,val,test}.csv`), one model per seed. Its test sets are
   small (30 rows for iris), so a difference of a few tenths of a point is one or two rows that
   sit near a class boundary, and which method wins depends on those rows.
2. Repeated stratified 5-fold cross-validation over `all.csv`: each repeat shuffles the rows
   (per class), deals them into five folds, and for each fold k trains on three folds, validates
   on fold k+1 and tests on fold k (the same 60/20/20 shares as the fixed split). Every row is
   a test row once per repeat, and kiln and scikit-learn get the same folds, so their paired
   difference (with its standard error over the folds) is the figure to read.

    .venv/bin/python scripts/sklearn_baseline.py [path/to/kiln]

Environment: KILN_BASELINE_SETS (default iris,wine,digits), KILN_BASELINE_SEEDS (fixed-split
seeds, default 10), KILN_BASELINE_REPEATS (cross-validation repeats, default 4),
KILN_BASELINE_ARGS (extra kiln flags).
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

REPO = Path(__file__).resolve().parent.parent
HIDDEN = (32, 16)
EPOCHS, BATCH, LR = 200, 16, 0.01
SEEDS = range(int(os.environ.get("KILN_BASELINE_SEEDS", "10")))
REPEATS = int(os.environ.get("KILN_BASELINE_REPEATS", "4"))
FOLDS = 5
# kiln's own settings beyond the shared ones (see docs/TRAINING.md).
KILN_EXTRA = os.environ.get("KILN_BASELINE_ARGS", "").split()
# MLPClassifier's defaults tol=1e-4, n_iter_no_change=10, as kiln flags.
SKLEARN_STOPPING = ["--patience", "10", "--early-stop-metric", "train_loss", "--min-delta", "1e-4"]
# kiln runs are separate processes, so they can run side by side.
WORKERS = os.cpu_count() or 1


def load(path):
    rows = [line.strip().split(",") for line in open(path) if line.strip()]
    header, body = rows[0], rows[1:]
    target = header.index("label")
    x = np.array([[float(v) for i, v in enumerate(r) if i != target] for r in body])
    y = np.array([r[target] for r in body])
    return x, y


def sklearn_accuracy(d, seed):
    (xt, yt), (xs, ys) = load(d / "train.csv"), load(d / "test.csv")
    scaler = StandardScaler().fit(xt)
    clf = MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        solver="adam",
        learning_rate_init=LR,
        batch_size=BATCH,
        max_iter=EPOCHS,
        random_state=seed,
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


def write_folds(name, repeat, root):
    """The FOLDS (directory, seed) splits of one cross-validation repeat of data/<name>/all.csv."""
    lines = [l for l in (REPO / "data" / name / "all.csv").read_text().splitlines() if l.strip()]
    header, body = lines[0], lines[1:]
    label = header.split(",").index("label")
    rng = random.Random(repeat)
    by_class = {}
    for line in body:
        by_class.setdefault(line.split(",")[label], []).append(line)
    folds = [[] for _ in range(FOLDS)]
    dealt = 0
    for c in sorted(by_class):
        members = by_class[c]
        rng.shuffle(members)
        for line in members:
            folds[dealt % FOLDS].append(line)
            dealt += 1
    splits = []
    for k in range(FOLDS):
        d = Path(root) / f"{name}-r{repeat}-f{k}"
        d.mkdir()
        val = (k + 1) % FOLDS
        parts = {
            "test": folds[k],
            "val": folds[val],
            "train": [l for j in range(FOLDS) if j not in (k, val) for l in folds[j]],
        }
        for part, rows in parts.items():
            rows = list(rows)
            rng.shuffle(rows)
            (d / f"{part}.csv").write_text("\n".join([header, *rows]) + "\n")
        splits.append((d, repeat * FOLDS + k))
    return splits


def run_all(kiln, splits, extra=()):
    with ThreadPoolExecutor(WORKERS) as pool:
        return np.array(list(pool.map(lambda s: kiln_accuracy(kiln, s[0], s[1], extra), splits)))


def fixed_split(kiln, names):
    print("Fixed split, test accuracy over seeds, mean (min–max):\n")
    print("| data set | test rows | kiln, defaults | kiln, scikit-learn's stopping rule "
          "| scikit-learn |")
    print("|----------|----------:|---------------:|-----------------------------------:"
          "|-------------:|")
    for name in names:
        d = REPO / "data" / name
        splits = [(d, s) for s in SEEDS]
        k = run_all(kiln, splits)
        ks = run_all(kiln, splits, SKLEARN_STOPPING)
        s = np.array([sklearn_accuracy(d, seed) for seed in SEEDS])
        rows = len(load(d / "test.csv")[1])
        fmt = lambda v: f"{v.mean():.4f} ({v.min():.4f}–{v.max():.4f})"
        print(f"| {name} | {rows} | {fmt(k)} | {fmt(ks)} | {fmt(s)} |", flush=True)


def cross_validation(kiln, names):
    print(f"\nRepeated stratified {FOLDS}-fold cross-validation ({REPEATS} repeats), test "
          "accuracy, mean ± standard error over the folds; kiln − scikit-learn paired by fold:\n")
    print("| data set | models each | scikit-learn | kiln, defaults | kiln − scikit-learn "
          "| kiln, scikit-learn's stopping rule | kiln − scikit-learn |")
    print("|----------|------------:|-------------:|---------------:|--------------------:"
          "|-----------------------------------:|--------------------:|")
    se = lambda v: v.std(ddof=1) / np.sqrt(len(v))
    fmt = lambda v: f"{v.mean():.4f} ± {se(v):.4f}"
    diff = lambda v: f"{v.mean():+.4f} ± {se(v):.4f}"
    for name in names:
        with tempfile.TemporaryDirectory() as root:
            splits = [s for r in range(REPEATS) for s in write_folds(name, r, root)]
            s = np.array([sklearn_accuracy(d, seed) for d, seed in splits])
            k = run_all(kiln, splits)
            ks = run_all(kiln, splits, SKLEARN_STOPPING)
        print(f"| {name} | {len(splits)} | {fmt(s)} | {fmt(k)} | {diff(k - s)} | {fmt(ks)} "
              f"| {diff(ks - s)} |", flush=True)


def main():
    kiln = sys.argv[1] if len(sys.argv) > 1 else str(REPO / "target/release/kiln")
    names = os.environ.get("KILN_BASELINE_SETS", "iris,wine,digits").split(",")
    if SEEDS:
        fixed_split(kiln, names)
    if REPEATS:
        cross_validation(kiln, names)


if __name__ == "__main__":
    main()
