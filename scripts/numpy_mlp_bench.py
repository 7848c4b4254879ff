#!/usr/bin/env python3
"""The NumPy/OpenBLAS baseline of kiln's training-throughput bench (benches/train_throughput.rs).

The same model and optimizer as kiln's: an MLP 784→256→128→10 with ReLU, softmax
cross-entropy, Adam (lr 1e-3, betas 0.9/0.999, eps 1e-5 as in burn), float32, batch 64, a
shuffled epoch of synthetic rows. Prints one JSON object with the median samples/s of 5 epochs.
"""
import argparse
import json
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=6400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    sizes = [784, 256, 128, 10]
    x = rng.standard_normal((a.rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, a.rows)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(1.0 / fan_in)
        params.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32))
        params.append(np.zeros(fan_out, dtype=np.float32))
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, b1, b2, eps = np.float32(1e-3), np.float32(0.9), np.float32(0.999), np.float32(1e-5)
    step = 0

    def train_step(xb, yb):
        nonlocal step
        acts = [xb]
        h = xb
        for i in range(0, len(params), 2):
            z = h @ params[i] + params[i + 1]
            h = np.maximum(z, 0) if i < len(params) - 2 else z
            acts.append(h)
        logits = acts[-1]
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = p
        g[np.arange(len(yb)), yb] -= 1
        g /= np.float32(len(yb))
        grads = [None] * len(params)
        for i in range(len(params) - 2, -1, -2):
            a_in = acts[i // 2]
            grads[i] = a_in.T @ g
            grads[i + 1] = g.sum(axis=0)
            if i > 0:
                g = (g @ params[i].T) * (acts[i // 2] > 0)
        step += 1
        c1, c2 = 1 - b1**step, 1 - b2**step
        for k, (p_, g_) in enumerate(zip(params, grads)):
            m[k] = b1 * m[k] + (1 - b1) * g_
            v[k] = b2 * v[k] + (1 - b2) * g_ * g_
            p_ -= lr * (m[k] / c1) / (np.sqrt(v[k] / c2) + eps)

    rates = []
    for _ in range(a.epochs):
        order = rng.permutation(a.rows)
        t = time.perf_counter()
        for s in range(0, a.rows, a.batch):
            idx = order[s : s + a.batch]
            train_step(x[idx], y[idx])
        rates.append(a.rows / (time.perf_counter() - t))
    rates.sort()
    print(json.dumps({"samples_per_second": rates[len(rates) // 2], "numpy": np.__version__}))


if __name__ == "__main__":
    main()
