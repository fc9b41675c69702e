#!/usr/bin/env python3
"""Make the benchmark inputs with real torch.save (not committed: large).

    python make_inputs.py OUTDIR

  big-300.pt      ~80 MB state dict, 300 float32 tensors
  many-30000.pt   30 000 small tensors (the tensor-count axis)
  many-N.pt       N in 3 000, 10 000, 100 000 for the linearity check
  small/          200 small checkpoints and pickles
"""
import os
import pickle
import sys

import torch

out = sys.argv[1]
os.makedirs(os.path.join(out, "small"), exist_ok=True)
torch.manual_seed(0)
if not os.path.exists(os.path.join(out, "big-300.pt")):
    # 300 tensors of 256x256 float32 = 256 KiB each, about 79 MB in all.
    torch.save({f"layers.{i}.weight": torch.randn(256, 256) for i in range(300)}, os.path.join(out, "big-300.pt"))
for n in (3000, 10000, 30000, 100000):
    p = os.path.join(out, f"many-{n}.pt")
    if not os.path.exists(p):
        torch.save({f"blocks.{i // 8}.p{i % 8}": torch.zeros(4) for i in range(n)}, p)
for i in range(200):
    p = os.path.join(out, "small", f"f{i:03}.pt" if i % 2 == 0 else f"f{i:03}.pkl")
    if os.path.exists(p):
        continue
    if i % 2 == 0:
        torch.save({"w": torch.randn(16, 16), "b": torch.zeros(16), "step": i}, p)
    else:
        with open(p, "wb") as f:
            pickle.dump({"run": i, "metrics": [0.1 * k for k in range(50)], "name": f"exp-{i}"}, f, protocol=4)
