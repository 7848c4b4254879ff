#!/usr/bin/env python3
"""Regenerates data/iris, data/wine and data/digits from the copies that ship inside
scikit-learn's wheel.

Usage: python3 scripts/prepare_real_data.py <path to an unpacked sklearn/datasets/data folder>

Each data set is written whole (all.csv) and split 60/20/20 into train/val/test with a fixed
seed, stratified by class so that every split holds every class.
"""
import csv, gzip, random, sys, pathlib

SETS = {
    "iris": ("iris.csv", ["sepal_length", "sepal_width", "petal_length", "petal_width"]),
    "wine": ("wine_data.csv", ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium",
             "total_phenols", "flavanoids", "nonflavanoid_phenols", "proanthocyanins",
             "color_intensity", "hue", "od280_od315", "proline"]),
}

def load(src, name):
    """(header, rows with the class name last, class names) of one data set."""
    if name == "digits":
        # 8x8 grey levels 0..16, row-major, then the digit; no header line.
        with gzip.open(pathlib.Path(src) / "digits.csv.gz", "rt") as f:
            rows = [r for r in csv.reader(f) if r]
        data = [[str(int(float(v))) for v in r[:-1]] + [str(int(float(r[-1])))] for r in rows]
        return [f"p{i}" for i in range(64)], data, [str(d) for d in range(10)]
    fname, cols = SETS[name]
    with open(pathlib.Path(src) / fname) as f:
        rows = list(csv.reader(f))
    classes = rows[0][2:]
    return cols, [r[:-1] + [classes[int(r[-1])]] for r in rows[1:]], classes


def main(src):
    root = pathlib.Path(__file__).resolve().parent.parent / "data"
    for name in [*SETS, "digits"]:
        cols, data, classes = load(src, name)
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
