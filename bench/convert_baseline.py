#!/usr/bin/env python3
"""The usual conversion, for comparison: torch.load then safetensors' save_file.

    python convert_baseline.py IN OUT
"""
import sys

import torch
from safetensors.torch import save_file

sd = torch.load(sys.argv[1], weights_only=True)
save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2], metadata={"format": "pt"})
