"""A GGUF model -> an mlx-lm checkpoint of the same weights, for bench/peers/run.py.

    python bench/peers/convert_mlx.py --model gemma|qwen|PATH.gguf

mlx-lm reads HuggingFace/MLX safetensors checkpoints only (MLX's own GGUF reader keeps
Q4_0/Q4_1/Q8_0 and casts other block formats to float16; mlx-lm does not use it), and
there is no offline MLX copy of these models. So:

1. every GGUF tensor is dequantized to float32 with the ``gguf`` package and saved as
   float16 safetensors under HuggingFace names (the inverse of tinyfast's HF -> GGUF name
   map; Gemma's norms get back the ``- 1`` that llama.cpp's converter folded in), with a
   ``config.json`` from the GGUF metadata and the tokenizer tinyfast builds from the GGUF
   (``tokenizer.json``) -> ``<cache>/peers/mlx/<name>-f16``;
2. ``mlx_lm.convert -q`` (4-bit affine, group size 64, mlx-lm's defaults) quantizes it
   -> ``<cache>/peers/mlx/<name>-q4``.

Same weights as the GGUF (after one dequantize/requantize round trip), different
quantization: compare speed, not outputs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import default_mlx_dir, resolve_model  # noqa: E402


def hf_names(architecture: str) -> dict[str, str]:
    from tinyfast.models.weights import GEMMA3_LAYER_NAMES, HF_GLOBAL_NAMES, HF_LAYER_NAMES

    names = {**HF_LAYER_NAMES, **GEMMA3_LAYER_NAMES} if architecture == "gemma3" else dict(HF_LAYER_NAMES)
    layer = {v: k for k, v in names.items()}
    glob = {v: k for k, v in HF_GLOBAL_NAMES.items()}
    return {"layer": layer, "global": glob}


def to_hf_name(name: str, maps: dict) -> str | None:
    base, _, suffix = name.rpartition(".")  # "blk.3.attn_q" + "weight"/"bias"
    if base.startswith("blk."):
        _, idx, sub = base.split(".", 2)
        mod = maps["layer"].get(sub)
        return None if mod is None else f"model.layers.{idx}.{mod}.{suffix}"
    mod = maps["global"].get(base)
    return None if mod is None else f"{mod}.{suffix}"


def hf_config(cfg, meta: dict) -> dict:
    common = dict(hidden_size=cfg.hidden, intermediate_size=cfg.intermediate, num_hidden_layers=cfg.n_layers,
                  num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
                  vocab_size=cfg.vocab_size, rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta,
                  max_position_embeddings=cfg.context_length, tie_word_embeddings=cfg.tie_word_embeddings,
                  torch_dtype="float16")
    if cfg.architecture == "gemma3":
        pattern = cfg.sliding_window_pattern or 6
        return dict(common, architectures=["Gemma3ForCausalLM"], model_type="gemma3_text",
                    query_pre_attn_scalar=cfg.head_dim, sliding_window=cfg.sliding_window,
                    sliding_window_pattern=pattern, rope_local_base_freq=cfg.rope_local_theta or 10000.0,
                    layer_types=["sliding_attention" if s else "full_attention" for s in cfg.sliding_layers],
                    hidden_activation="gelu_pytorch_tanh", final_logit_softcapping=None, rope_scaling=None)
    if cfg.architecture == "qwen2":
        return dict(common, architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu",
                    use_sliding_window=False)
    if cfg.architecture == "llama":
        return dict(common, architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu")
    raise SystemExit(f"convert_mlx.py knows gemma3, qwen2 and llama, not {cfg.architecture}")


def dequantized_checkpoint(gguf_path: Path, out: Path) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    from tinyfast.loaders import GGUFFile
    from tinyfast.tokenizer import Tokenizer

    with GGUFFile(gguf_path) as g:
        cfg = g.model_config()
        meta = dict(g.metadata)
    maps = hf_names(cfg.architecture)
    reader = GGUFReader(str(gguf_path))
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = to_hf_name(t.name, maps)
        if name is None:
            print(f"  skipping {t.name}", file=sys.stderr)
            continue
        a = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(int(x) for x in reversed(t.shape)))
        if cfg.architecture == "gemma3" and name.endswith("norm.weight"):
            a = a - 1.0  # llama.cpp stores Gemma's (1 + w); HF and mlx-lm add the 1 at run time
        tensors[name] = a.astype(np.float16)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(cfg, meta), indent=2))
    tok = Tokenizer.from_gguf_metadata(meta)
    tok.hf.save(str(out / "tokenizer.json"))
    special = {}
    for key, tid in (("bos_token", tok.bos_token_id), ("eos_token", tok.eos_token_id),
                     ("pad_token", tok.pad_token_id)):
        if tid is not None:
            special[key] = tok.hf.id_to_token(tid)
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.context_length, **special}, indent=2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma")
    args = ap.parse_args(argv)
    gguf_path = resolve_model(args.model)
    f16 = default_mlx_dir(gguf_path, "f16")
    q4 = default_mlx_dir(gguf_path, "q4")
    if not (f16 / "config.json").is_file():
        print(f"dequantizing {gguf_path.name} -> {f16}", file=sys.stderr)
        dequantized_checkpoint(gguf_path, f16)
    if not (q4 / "config.json").is_file():
        cmd = [sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(f16), "--mlx-path", str(q4), "-q",
               "--q-bits", "4", "--q-group-size", "64"]
        print("running: " + " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
    print(f"{f16}\n{q4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
