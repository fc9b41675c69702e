#!/usr/bin/env python3
"""A ~1 GiB state dict for bench/load.sh, saved by real torch.save and as
safetensors: OUTDIR/big.pt and OUTDIR/big.safetensors."""
import os
import sys

import torch
from safetensors.torch import save_file

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
# 64 tensors of 4096 x 1024 float32 = 64 x 16 MiB = 1 GiB.
sd = {f"layers.{i}.weight": torch.randn(4096, 1024) for i in range(64)}
torch.save(sd, os.path.join(out, "big.pt"))
save_file(sd, os.path.join(out, "big.safetensors"))
