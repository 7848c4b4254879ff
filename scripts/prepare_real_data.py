#!/usr/bin/env python3
"""Regenerates data/iris and data/wine from the copies that ship inside scikit-learn's wheel.

Usage: python3 scripts/prepare_real_data.py <path to an unpacked sklearn/datasets/data folder>

Each data set is written whole (all.csv) and split 60/20/20 into train/val/test with a fixed
seed, stratified by class so that every split holds every class.
"""
import csv, random, sys, pathlib

SETS = {
    "iris": ("iris.csv", ["sepal_length", "sepal_width", "petal_length", "petal_width"]),
    "wine": ("wine_data.csv", ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium",
             "total_phenols", "flavanoids", "nonflavanoid_phenols", "proanthocyanins",
             "color_intensity", "hue", "od280_od315", "proline"]),
}

def main(src):
    root = pathlib.Path(__file__).resolve().parent.parent / "data"
    for name, (fname, cols) in SETS.items():
        with open(pathlib.Path(src) / fname) as f:
            rows = list(csv.reader(f))
        classes = rows[0][2:]
        data = [r[:-1] + [classes[int(r[-1])]] for r in rows[1:]]
        out = root / name
        out.mkdir(parents=True, exist_ok=True)
        header = cols + ["label"]
        def write(path, part):
            with open(path, "w", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(header)
                w.writerows(part)
        write(out / "all.csv", data)
        rng = random.Random(20261125)
        splits = {"train": [], "val": [], "test": []}
        for c in classes:
            members = [r for r in data if r[-1] == c]
            rng.shuffle(members)
            n = len(members)
            a, b = round(n * 0.6), round(n * 0.8)
            splits["train"] += members[:a]
            splits["val"] += members[a:b]
            splits["test"] += members[b:]
        for k, part in splits.items():
            rng.shuffle(part)
            write(out / f"{k}.csv", part)

if __name__ == "__main__":
    main(sys.argv[1])
