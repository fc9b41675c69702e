#!/usr/bin/env python3
"""Make the GGUF/ONNX/zstd benchmark inputs with the real producers.

    python formats_inputs.py OUTDIR

  llm-q8.gguf     ~130 MB GGUF: 291 tensors (a 1B-parameter-shaped layout,
                  F16/F32), a ChatML chat template and a tokenizer of 32k tokens
  many.onnx       ONNX model with 4 000 initializers inline (~64 MB)
  external/       the same model with its weights in a file beside it
  fixtures/       the committed GGUF, ONNX and zstd fixtures (detection)
"""
import os
import shutil
import sys

import numpy as np

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))
corpus = os.path.join(here, "..", "fixtures", "corpus")
fx = os.path.join(out, "fixtures")
os.makedirs(fx, exist_ok=True)
for n in os.listdir(corpus):
    if n.endswith((".gguf", ".onnx", ".zst", ".onnx.data")):
        shutil.copy(os.path.join(corpus, n), fx)

p = os.path.join(out, "llm-q8.gguf")
if not os.path.exists(p):
    import gguf
    sys.path.insert(0, os.path.join(here, "..", "fixtures", "gen"))
    from make_fixtures import CHATML
    w = gguf.GGUFWriter(p, arch="llama")
    w.add_name("bench")
    w.add_context_length(2048)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}" for i in range(32000)])
    w.add_chat_template(CHATML)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((32000, 512)).astype(np.float16))
    for b in range(18):
        for name, shape in [("attn_q", (512, 512)), ("attn_k", (512, 512)), ("attn_v", (512, 512)),
                            ("attn_output", (512, 512)), ("ffn_gate", (1408, 512)), ("ffn_up", (1408, 512)),
                            ("ffn_down", (512, 1408)), ("attn_norm", (512,)), ("ffn_norm", (512,)),
                            ("attn_q_norm", (512,)), ("attn_k_norm", (512,)), ("rope_freqs", (256,)),
                            ("post_attn_norm", (512,)), ("post_ffn_norm", (512,)), ("layer_scale", (512,)),
                            ("attn_sinks", (8,))]:
            dt = np.float16 if len(shape) == 2 else np.float32
            w.add_tensor(f"blk.{b}.{name}.weight", rng.standard_normal(shape).astype(dt))
    w.add_tensor("output_norm.weight", np.ones(512, dtype=np.float32))
    w.add_tensor("output.weight", rng.standard_normal((32000, 512)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

p = os.path.join(out, "many.onnx")
if not os.path.exists(p):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    n = 4000
    inits = [numpy_helper.from_array(np.full(4096, i, dtype=np.float32), name=f"w{i}") for i in range(n)]
    nodes = [helper.make_node("Add", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}" if i < n - 1 else "y"])
             for i in range(n)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4096])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4096])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(m, p)
    os.makedirs(os.path.join(out, "external"), exist_ok=True)
    onnx.save_model(m, os.path.join(out, "external", "many.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="many.onnx.data", size_threshold=0)
