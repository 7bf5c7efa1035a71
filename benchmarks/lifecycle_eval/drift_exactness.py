#!/usr/bin/env python
"""Issue 15: is bbsd's combined permutation test exact?  False positives on synthetic data with a fresh reference per batch.

On the digit suite the false-positive rate of one reference can sit far from alpha (0.02-0.18 per reference at
n = 10), so a few references cannot tell a biased test from the spread between references.  Here every batch gets
its own reference: 180 softmax rows (a sharp logit on a uniformly drawn class, Gaussian noise elsewhere) plus 48-d
"pixels" whose level depends on the class, and the batch is drawn the same way.  The detector is the product's
(``black_box(True)``, 200 permutations drawn per batch from the seed and a digest of its rows, as ``veml drift``
draws them), so the rate over batches estimates the test's unconditional size.

    python -m benchmarks.lifecycle_eval.drift_exactness --batches 2000 --ns 10,100
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from veml.coreset.combined import Combined, black_box


def rows(classes: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((len(classes), 10))
    logits[np.arange(len(classes)), classes] += 4.0
    e = np.exp(logits)
    pixels = 0.3 + 0.05 * classes[:, None] + 0.1 * rng.standard_normal((len(classes), 48))
    return {"softmax": (e / e.sum(1, keepdims=True)).astype(np.float32), "pixels": pixels.astype(np.float32)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--ns", default="10,100")
    p.add_argument("--reference", type=int, default=180)
    p.add_argument("--seed", type=int, default=123)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    print("| n | batches | false-positive rate | 95 % Clopper-Pearson interval |")
    print("|---|---|---|---|")
    for n in (int(x) for x in a.ns.split(",")):
        k = 0
        for i in range(a.batches):
            f = Combined(black_box(True), n_permutations=200).fit(rows(rng.integers(0, 10, a.reference), 2 * i))
            k += f.test(rows(rng.integers(0, 10, n), 2 * i + 1)).drift
        low = stats.beta.ppf(0.025, k, a.batches - k + 1) if k else 0.0
        high = stats.beta.ppf(0.975, k + 1, a.batches - k) if k < a.batches else 1.0
        print(f"| {n} | {a.batches} | {k / a.batches:.3f} | [{low:.3f}, {high:.3f}] |")


if __name__ == "__main__":
    main()
