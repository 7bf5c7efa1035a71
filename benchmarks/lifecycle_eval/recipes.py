"""Pilot that chose transfer's fine-tuning recipe (issue 14): four recipes fine-tune every source on two targets.

    python -m benchmarks.lifecycle_eval.recipes SEED [WORK_DIR]     # one seed, about 20 min on 2 cores

Same data as the harness (benchmarks/lifecycle_eval/run.py); fine-tunes through ``repo.training.train(init_from=)``
with keep_better off, so each recipe's raw effect shows.  Prints one line per (target, source, recipe) and writes
WORK_DIR/out{SEED}.json.  One seed: a pilot, not evidence; the harness measures the chosen recipe over seeds.
"""
import json
import sys
from pathlib import Path
import numpy as np
from benchmarks.lifecycle_eval.run import write_folder, split, DOMAINS
import veml
from sklearn.datasets import load_digits
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
d = load_digits(); images, labels = d.images, d.target
rng = np.random.default_rng(seed)
tgt_pool, src_pool = split(labels, rng, 40)
base = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("bench-out/recipes")
work = base / f"w{seed}"; repo = veml.init(work / "repo"); gen = work / "gen"
S = ["rot15", "rot45", "noise20", "invert"]; T = ["rot30", "blur2"]
for s in S:
    idx = np.concatenate([rng.choice(src_pool[c], 40, replace=False) for c in range(10)])
    repo.data.import_("images", write_folder(gen / s, images, labels, idx, DOMAINS[s], rng), s)
for t in T:
    tr = np.concatenate([tgt_pool[c][:10] for c in range(10)]); te = np.concatenate([tgt_pool[c][10:] for c in range(10)])
    repo.data.import_("images", write_folder(gen / t, images, labels, tr, DOMAINS[t], rng), t)
    repo.data.import_("images", write_folder(gen / f"{t}-test", images, labels, te, DOMAINS[t], rng), f"{t}-test", role="test")
repo.models.add("clf", {"adapter": "torch", "task": "classification", "architecture": "resnet18",
                        "parameters": {"image_size": 32, "pretrained": False, "freeze_backbone": False}})
rec = {"epochs": 5, "batch_size": 16, "seed": seed}
for s in S:
    repo.training.train(s, "clf", sets=rec, name=f"src-{s}")
R = {
  "A_2ep_head_lr.1_wu": {"epochs": 3, "head_epochs": 1, "lr": 1e-4, "warmup_steps": 10},
  "B_2ep_head_lr.3_wu": {"epochs": 3, "head_epochs": 1, "lr": 3e-4, "warmup_steps": 10},
  "C_2ep_lr.1_wu": {"epochs": 2, "lr": 1e-4, "warmup_steps": 10},
  "D_5ep_lr.1": {"epochs": 5, "lr": 1e-4},
}
out = {}
for t in T:
    out[t] = {"scratch": repo.training.train(t, "clf", sets=rec, test=f"{t}-test", name=f"scr-{t}")["metrics"]["accuracy"]}
    for s in S:
        for k, r in R.items():
            run = repo.training.train(t, "clf", sets={**rec, **r}, init_from=f"src-{s}", test=f"{t}-test", name=f"{t}-{s}-{k}")
            out[t][f"{s}/{k}"] = run["metrics"]["accuracy"]
            print(t, s, k, run["metrics"]["accuracy"], "scratch", out[t]["scratch"], flush=True)
(base / f"out{seed}.json").write_text(json.dumps(out, indent=1))
