"""Weights in safetensors: export and re-import a `TransformerLM`, and load Hugging Face checkpoints.

Hugging Face layout (Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE): tensors named
`model.layers.{i}.self_attn.q_proj.weight`, ... with linear weights stored [out, in]; ours
are `nnx.Linear` kernels [in, out] stacked per layer segment (`nets.layer_segments`), so
a tensor maps by a transpose and an index, both exact. What our network computes is what
these families compute (so nothing is permuted):
  RoPE     rotate-half over the two halves of each head (`nets._layers.apply_rope`), the
           layout of Hugging Face's `rotate_half`, frequencies theta^(-2i/head_dim);
  norms    RMSNorm x / sqrt(mean(x^2) + eps) * w with eps = rms_norm_eps, Qwen3's q/k
           norms per head before RoPE;
  GQA      query head h reads K/V head h // (n_heads / n_kv_heads), as `repeat_kv`;
  biases   Qwen2's q/k/v biases (`attention.qkv_bias`);
  MoE      softmax router, top-k, gates renormalised over the k (Mixtral; Qwen3-MoE with
           norm_topk_prob), experts w1 = gate, w3 = up, w2 = down;
  head     tied to the embedding iff tie_word_embeddings.
A config whose Hugging Face model computes something else with the same shapes (RoPE
scaling, an un-normalised top-k, quantized storage, ...: `nets.map_hf(...).not_computed`) is
refused rather than loaded into a network that would give other logits.

`save_safetensors` writes that layout (and Hugging Face's config.json beside the file)
when `nets.to_hf` maps the config, else our own parameter paths; the `ModelConfig` rides
in the file's metadata either way, so `load_safetensors` rebuilds the network bit-exactly.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save

from nets._config import ModelConfig
from nets._errors import fail
from nets._hf_config import map_hf, model_type_of, to_hf
from nets._io import atomic_write, atomic_write_json
from nets._model import TransformerLM, layer_segments

WEIGHT_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe")
_CONFIG_KEY, _LAYOUT_KEY, _DTYPE_KEY = "nets.model_config", "nets.layout", "nets.dtype"

# Module paths inside one of our blocks -> the Hugging Face module of the same layer.
_BLOCK_MODULES = {
    ("attn_norm",): "input_layernorm", ("ffn_norm",): "post_attention_layernorm",
    ("attn", "wq"): "self_attn.q_proj", ("attn", "wk"): "self_attn.k_proj", ("attn", "wv"): "self_attn.v_proj",
    ("attn", "wo"): "self_attn.o_proj", ("attn", "q_head_norm"): "self_attn.q_norm",
    ("attn", "k_head_norm"): "self_attn.k_norm",
    ("ffn", "gate"): "mlp.gate_proj", ("ffn", "up"): "mlp.up_proj", ("ffn", "down"): "mlp.down_proj",
}
_TOP_MODULES = {("embed",): "model.embed_tokens", ("final_norm",): "model.norm", ("lm_head",): "lm_head"}
# MoE parameters of our `nets.MoE` -> (router, per-expert gate / up / down) names of each family.
_MOE_NAMES = {
    "mixtral": ("block_sparse_moe.gate.weight", "block_sparse_moe.experts.{e}.w1.weight",
                "block_sparse_moe.experts.{e}.w3.weight", "block_sparse_moe.experts.{e}.w2.weight"),
    "qwen3_moe": ("mlp.gate.weight", "mlp.experts.{e}.gate_proj.weight", "mlp.experts.{e}.up_proj.weight",
                  "mlp.experts.{e}.down_proj.weight"),
}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some older checkpoints saved; recomputed here


def _param_name(path: tuple, in_block: bool, moe_family: str | None) -> tuple[str, str]:
    """(Hugging Face name, how it maps) of a parameter path relative to a block (`in_block`) or the model.

    'transpose': a [in, out] kernel against an [out, in] weight; 'copy': same array;
    'experts': our (E, in, out) stack against per-expert [out, in] weights ('{e}' in the name).
    """
    *module_list, leaf = (str(p) for p in path)
    module = tuple(module_list)
    if module == ("ffn",) and moe_family is not None:
        router, gate, up, down = _MOE_NAMES[moe_family]
        names = {"router_kernel": (router, "transpose"), "expert_gate": (gate, "experts"),
                 "expert_up": (up, "experts"), "expert_down": (down, "experts")}
        if leaf in names:
            return names[leaf]
    modules = _BLOCK_MODULES if in_block else _TOP_MODULES
    if module not in modules:
        fail("parameter", ".".join(map(str, path)), f"has no Hugging Face counterpart in "
             f"{moe_family or 'the dense families'} (shared experts, MLA and MFA do not export)")
    if leaf == "kernel":
        return f"{modules[module]}.weight", "transpose"
    return f"{modules[module]}.{'bias' if leaf == 'bias' else 'weight'}", "copy"


def _layers_of(cfg: ModelConfig) -> Iterator[tuple[int, int, int, int]]:
    """(segment, repeat, block, layer) for every layer, in the order of `layer_segments`."""
    layer = 0
    for segment, (kinds, repeats) in enumerate(layer_segments(cfg)):
        for repeat in range(repeats):
            for block in range(len(kinds)):
                yield segment, repeat, block, layer
                layer += 1


def _hf_entries(cfg: ModelConfig, model_type: str, flat_paths) -> Iterator[tuple[tuple, int | None, str, str]]:
    """(our flat path, repeat index or None, Hugging Face name, mapping) for every parameter."""
    by_segment_block: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for segment, repeat, block, layer in _layers_of(cfg):
        by_segment_block.setdefault((segment, block), []).append((repeat, layer))
    for path in flat_paths:
        if path[0] == "segments":
            segment, block, rest = path[1], path[3], path[4:]
            layers = by_segment_block[(segment, block)]
            name, how = _param_name(rest, True, model_type if cfg.is_moe_layer(layers[0][1]) else None)
            for repeat, layer in layers:
                yield path, repeat, f"model.layers.{layer}.{name}", how
        else:
            yield (path, None, *_param_name(path, False, None))


def _to_hf(value: np.ndarray, how: str, n_experts: int) -> dict[str, np.ndarray]:
    if how == "transpose":
        return {"": np.ascontiguousarray(value.T)}
    if how == "experts":
        return {str(e): np.ascontiguousarray(value[e].T) for e in range(n_experts)}
    return {"": np.ascontiguousarray(value)}


def hf_state_dict(model: TransformerLM, model_type: str) -> dict[str, np.ndarray]:
    """The model's parameters under Hugging Face names and [out, in] layout (numpy, same dtype)."""
    cfg = model.cfg
    flat = {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    tensors: dict[str, np.ndarray] = {}
    for path, repeat, name, how in _hf_entries(cfg, model_type, flat):
        value = flat[path] if repeat is None else flat[path][repeat]
        for expert, array in _to_hf(value, how, cfg.ffn.n_experts).items():
            tensors[name.format(e=expert) if how == "experts" else name] = array
    return tensors


def _abstract(cfg: ModelConfig, dtype, param_dtype):
    model = nnx.eval_shape(lambda: TransformerLM(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype))
    graphdef, state = nnx.split(model)
    return graphdef, list(nnx.to_flat_state(state))


def _build(cfg: ModelConfig, dtype, param_dtype, value_of: Callable[[tuple, Any], np.ndarray],
           abstract=None) -> TransformerLM:
    """A model whose every parameter is `value_of(path, abstract leaf)` (shape checked)."""
    graphdef, flat = abstract or _abstract(cfg, dtype, param_dtype)
    leaves = []
    for path, leaf in flat:
        value = np.asarray(value_of(path, leaf))
        if value.shape != tuple(leaf.shape):
            fail("parameter", ".".join(map(str, path)), f"checkpoint shape {value.shape}, the config needs "
                 f"{tuple(leaf.shape)}")
        leaves.append((path, leaf.replace(jnp.asarray(value, dtype=param_dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def _from_hf(cfg: ModelConfig, model_type: str, names: set[str], get: Callable[[str], np.ndarray],
             dtype, param_dtype) -> TransformerLM:
    """Build our model from Hugging Face tensors; every tensor must be used (or be a known buffer)."""
    abstract = _abstract(cfg, dtype, param_dtype)
    entries: dict[tuple, list[tuple[int | None, str, str]]] = {}
    for path, repeat, name, how in _hf_entries(cfg, model_type, [p for p, _ in abstract[1]]):
        entries.setdefault(path, []).append((repeat, name, how))
    used: set[str] = set()

    def read(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in names:
            fail("tensor", name, "missing from the checkpoint (the config needs it)")
        used.add(name)
        value = get(name)
        if value.shape != shape:
            fail("tensor", name, f"checkpoint shape {value.shape}, the config needs {shape}")
        return value

    def one(name: str, how: str, shape: tuple[int, ...]) -> np.ndarray:
        """Our array of `shape` from the Hugging Face tensor(s) `name`."""
        if how == "experts":
            return np.stack([read(name.format(e=e), shape[:0:-1]).T for e in range(shape[0])])
        return read(name, shape[::-1]).T if how == "transpose" else read(name, shape)

    def value_of(path, leaf):
        rows = entries[path]
        if rows[0][0] is None:
            return one(rows[0][1], rows[0][2], tuple(leaf.shape)).astype(param_dtype)
        return np.stack([one(name, how, tuple(leaf.shape[1:])).astype(param_dtype) for _, name, how in sorted(rows)])

    model = _build(cfg, dtype, param_dtype, value_of, abstract)
    unused = sorted(n for n in names - used
                    if not n.endswith(_IGNORED_SUFFIXES) and not (cfg.tie_embeddings and n == "lm_head.weight"))
    if unused:
        fail("tensor", unused[0], f"not used by the {model_type} mapping ({len(unused)} unused; loading "
             "would silently drop them)")
    return model


@contextlib.contextmanager
def _open_tensors(directory: Path):
    """(names, get) over model.safetensors, or the shards listed in model.safetensors.index.json."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            fail("weight_map", weight_map, "must be an object of tensor name -> file", file=str(index))
        files = sorted(set(weight_map.values()))
    elif (directory / "model.safetensors").exists():
        files, weight_map = ["model.safetensors"], None
    else:
        fail("checkpoint", str(directory), "has neither model.safetensors nor model.safetensors.index.json")
    with contextlib.ExitStack() as stack:
        handles = {f: stack.enter_context(safe_open(str(directory / f), framework="numpy")) for f in files}
        where = weight_map or {name: files[0] for name in handles[files[0]].keys()}
        yield set(where), lambda name: handles[where[name]].get_tensor(name)


def load_hf_checkpoint(path: str | Path, *, dtype=jnp.float32, param_dtype=jnp.float32,
                       ignore: tuple[str, ...] = ()) -> TransformerLM:
    """A `TransformerLM` holding a local Hugging Face safetensors checkpoint (directory with config.json).

    Families: Llama 2/3, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE. Tensors are cast to
    `param_dtype`; `dtype` is the compute dtype. `ignore` is passed to `nets.map_hf` (e.g.
    ('sliding_window',): logits then agree only on sequences within the window).
    """
    directory = Path(path)
    try:
        hf = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        fail("checkpoint", str(directory), f"no readable config.json ({err})")
    model_type = model_type_of(hf)
    if model_type not in WEIGHT_FAMILIES:
        fail("model_type", model_type, f"weights load for {', '.join(WEIGHT_FAMILIES)} (its config maps for "
             "costing: nets.from_hf)", file=str(directory / "config.json"))
    mapping = map_hf(hf, ignore=ignore)
    if mapping.not_computed:
        fail("model_type", model_type, f"this checkpoint computes what the network here does not: "
             f"{'; '.join(mapping.not_computed)}", file=str(directory / "config.json"))
    with _open_tensors(directory) as (names, get):
        return _from_hf(mapping.config, model_type, names, get, dtype, param_dtype)


def save_safetensors(model: TransformerLM, path: str | Path) -> Path:
    """Write the model's parameters to `path` with its `ModelConfig` in the metadata.

    `path` is a .safetensors file, or a directory that gets model.safetensors (the name
    Hugging Face tools look for).

    When `nets.to_hf` maps the config, tensors use Hugging Face names and layout and the
    Hugging Face config.json is written beside the file (so its directory is a checkpoint
    that transformers and `load_hf_checkpoint` read); otherwise our parameter paths
    (e.g. segments.1.blocks.0.ffn.expert_up). Returns the path written.
    """
    if not isinstance(model, TransformerLM):
        fail("model", type(model).__name__, "must be a nets.TransformerLM")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "model.safetensors"
    cfg = model.cfg
    try:
        hf = to_hf(cfg)
    except ValueError:
        hf = None
    path.parent.mkdir(parents=True, exist_ok=True)
    if hf is not None:
        tensors = hf_state_dict(model, hf["model_type"])
        hf["torch_dtype"] = str(tensors["model.embed_tokens.weight"].dtype)
        atomic_write_json(path.parent / "config.json", hf)
    else:
        tensors = {".".join(map(str, p)): np.ascontiguousarray(np.asarray(v[...]))
                   for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    metadata = {"format": "pt", _CONFIG_KEY: cfg.to_json(indent=None), _LAYOUT_KEY: "hf" if hf else "nets",
                _DTYPE_KEY: jnp.dtype(model.dtype).name}
    atomic_write(path, save(tensors, metadata=metadata))
    return path


def load_safetensors(path: str | Path) -> TransformerLM:
    """The `TransformerLM` written by `save_safetensors` at `path` (file or directory), bit-exact."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    try:
        handle = safe_open(str(path), framework="numpy")
    except Exception as err:  # safetensors raises its own error types for unreadable files
        fail("path", str(path), f"not a readable safetensors file ({err})")
    with handle as f:
        metadata = f.metadata() or {}
        if _CONFIG_KEY not in metadata:
            fail("path", str(path), f"no {_CONFIG_KEY} metadata (not written by nets.save_safetensors; "
                 "for a Hugging Face checkpoint use nets.load_hf_checkpoint)")
        cfg = ModelConfig.from_json(metadata[_CONFIG_KEY])
        names = set(f.keys())
        param_dtype = f.get_tensor(sorted(names)[0]).dtype
        dtype = jnp.dtype(metadata.get(_DTYPE_KEY, "float32"))
        if metadata.get(_LAYOUT_KEY) == "hf":
            return _from_hf(cfg, to_hf(cfg)["model_type"], names, f.get_tensor, dtype, param_dtype)
        return _build(cfg, dtype, param_dtype, lambda p, leaf: f.get_tensor(".".join(map(str, p))))
