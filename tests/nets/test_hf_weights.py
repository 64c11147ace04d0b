"""safetensors: Hugging Face checkpoints load into `nets` and give the logits of an independent reference.

The checkpoints are written here, in Hugging Face's layout (tensor names such as
model.layers.0.self_attn.q_proj.weight, linear weights [out, in]), straight from random numpy
arrays with the safetensors library; the reference is a float64 numpy transcription of the
Hugging Face Llama / Qwen2 / Qwen3 / Mixtral / Qwen3-MoE forward passes (rotate_half RoPE,
repeat_kv, RMSNorm, softmax top-k router renormalised), sharing no code with `nets`.
"""

import json

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

import nets

LOGIT_TOL = 1e-4  # float32 network against a float64 reference, logits of order one

BASE = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=40, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
            hidden_act="silu", tie_word_embeddings=False)
FAMILIES = {
    "llama": dict(BASE, model_type="llama", architectures=["LlamaForCausalLM"], rope_theta=500000.0),
    "llama-tied": dict(BASE, model_type="llama", num_key_value_heads=4, tie_word_embeddings=True),
    "mistral": dict(BASE, model_type="mistral", head_dim=12, sliding_window=None),
    "qwen2": dict(BASE, model_type="qwen2", use_sliding_window=False, sliding_window=64),
    "qwen3": dict(BASE, model_type="qwen3", head_dim=16, num_key_value_heads=1),
    "mixtral": dict(BASE, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(BASE, model_type="qwen3_moe", head_dim=8, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=16, mlp_only_layers=[0], norm_topk_prob=True),
}


def head_dim(hf):
    return hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]


def is_moe(hf, layer):
    if hf["model_type"] == "mixtral":
        return True
    return hf["model_type"] == "qwen3_moe" and layer not in hf["mlp_only_layers"]


def random_checkpoint(hf, seed=0) -> dict[str, np.ndarray]:
    """Every tensor of the Hugging Face model, random (norm scales around one, biases nonzero), float32."""
    rng = np.random.default_rng(seed)
    mt, d, f = hf["model_type"], hf["hidden_size"], hf["intermediate_size"]
    q_out, kv_out = hf["num_attention_heads"] * head_dim(hf), hf["num_key_value_heads"] * head_dim(hf)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.3 / np.sqrt(shape[-1])).astype(np.float32)

    def scale(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    t = {"model.embed_tokens.weight": w(hf["vocab_size"], d), "model.norm.weight": scale(d)}
    if not hf["tie_word_embeddings"]:
        t["lm_head.weight"] = w(hf["vocab_size"], d)
    for i in range(hf["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": scale(d), p + "post_attention_layernorm.weight": scale(d),
                  p + "self_attn.q_proj.weight": w(q_out, d), p + "self_attn.k_proj.weight": w(kv_out, d),
                  p + "self_attn.v_proj.weight": w(kv_out, d), p + "self_attn.o_proj.weight": w(d, q_out)})
        if mt == "qwen2":
            for name, n in (("q", q_out), ("k", kv_out), ("v", kv_out)):
                t[p + f"self_attn.{name}_proj.bias"] = (0.3 * rng.standard_normal(n)).astype(np.float32)
        if mt in ("qwen3", "qwen3_moe"):
            t[p + "self_attn.q_norm.weight"], t[p + "self_attn.k_norm.weight"] = scale(head_dim(hf)), scale(head_dim(hf))
        if mt == "mixtral":
            t[p + "block_sparse_moe.gate.weight"] = w(hf["num_local_experts"], d) * 5
            for e in range(hf["num_local_experts"]):
                q = p + f"block_sparse_moe.experts.{e}."
                t.update({q + "w1.weight": w(f, d), q + "w3.weight": w(f, d), q + "w2.weight": w(d, f)})
        elif is_moe(hf, i):
            fe = hf["moe_intermediate_size"]
            t[p + "mlp.gate.weight"] = w(hf["num_experts"], d) * 5
            for e in range(hf["num_experts"]):
                q = p + f"mlp.experts.{e}."
                t.update({q + "gate_proj.weight": w(fe, d), q + "up_proj.weight": w(fe, d), q + "down_proj.weight": w(d, fe)})
        else:
            t.update({p + "mlp.gate_proj.weight": w(f, d), p + "mlp.up_proj.weight": w(f, d),
                      p + "mlp.down_proj.weight": w(d, f)})
    return t


def reference_logits(hf, t, tokens):
    """float64 forward of the Hugging Face model on one sequence `tokens` (L,): logits (L, vocab)."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    eps, K = hf["rms_norm_eps"], head_dim(hf)
    H, N = hf["num_attention_heads"], hf["num_key_value_heads"]
    L = len(tokens)

    def rms(x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight

    def rope(x):  # (L, heads, K); Hugging Face: cat(freqs, freqs), x * cos + rotate_half(x) * sin
        freqs = np.arange(L)[:, None] * hf["rope_theta"] ** (-np.arange(0, K, 2) / K)
        emb = np.concatenate([freqs, freqs], axis=-1)[:, None, :]
        rotated = np.concatenate([-x[..., K // 2:], x[..., :K // 2]], axis=-1)
        return x * np.cos(emb) + rotated * np.sin(emb)

    def silu(x):
        return x / (1 + np.exp(-x))

    def linear(x, name):
        y = x @ t[name + ".weight"].T
        return y + t[name + ".bias"] if name + ".bias" in t else y

    def mlp(x, gate, up, down):
        return (silu(x @ t[gate].T) * (x @ t[up].T)) @ t[down].T

    x = t["model.embed_tokens.weight"][tokens]
    for i in range(hf["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, t[p + "input_layernorm.weight"])
        q = linear(h, p + "self_attn.q_proj").reshape(L, H, K)
        k = linear(h, p + "self_attn.k_proj").reshape(L, N, K)
        v = linear(h, p + "self_attn.v_proj").reshape(L, N, K)
        if p + "self_attn.q_norm.weight" in t:
            q, k = rms(q, t[p + "self_attn.q_norm.weight"]), rms(k, t[p + "self_attn.k_norm.weight"])
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, H // N, axis=1), np.repeat(v, H // N, axis=1)  # repeat_kv
        scores = np.einsum("lhk,thk->hlt", q, k) / np.sqrt(K) + np.triu(np.full((L, L), -np.inf), 1)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + linear(np.einsum("hlt,thk->lhk", probs, v).reshape(L, H * K), p + "self_attn.o_proj")
        h = rms(x, t[p + "post_attention_layernorm.weight"])
        if not is_moe(hf, i):
            x = x + mlp(h, p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight")
            continue
        mixtral = hf["model_type"] == "mixtral"
        moe = p + ("block_sparse_moe." if mixtral else "mlp.")
        names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
        logits = h @ t[moe + "gate.weight"].T
        router = np.exp(logits - logits.max(-1, keepdims=True))
        router /= router.sum(-1, keepdims=True)
        out = np.zeros_like(h)
        for token in range(L):
            chosen = np.argsort(-router[token], kind="stable")[:hf["num_experts_per_tok"]]
            gates = router[token, chosen] / router[token, chosen].sum()
            for gate, e in zip(gates, chosen):
                out[token] += gate * mlp(h[token], *(f"{moe}experts.{e}.{n}.weight" for n in names))
        x = x + out
    x = rms(x, t["model.norm.weight"])
    return x @ (t["model.embed_tokens.weight"] if hf["tie_word_embeddings"] else t["lm_head.weight"]).T


def write_checkpoint(directory, hf, tensors, shards=1):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf))
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return directory
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


TOKENS = np.array([[3, 17, 42, 0, 9, 9, 31, 5, 48, 22, 1, 7]])


def our_logits(model, tokens=TOKENS):
    return np.asarray(model(jnp.asarray(tokens, jnp.int32))[0][0], np.float64)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_checkpoint_logits_match_reference(family, tmp_path):
    hf = FAMILIES[family]
    tensors = random_checkpoint(hf)
    model = nets.load_hf_checkpoint(write_checkpoint(tmp_path, hf, tensors))
    expected = reference_logits(hf, tensors, TOKENS[0])
    assert np.max(np.abs(expected)) > 0.5  # logits of order one: the tolerance is meaningful
    np.testing.assert_allclose(our_logits(model), expected, atol=LOGIT_TOL, rtol=LOGIT_TOL)


def test_moe_reference_routes_tokens_to_different_experts():
    """The MoE checks are not vacuous: tokens choose different expert sets."""
    hf = FAMILIES["mixtral"]
    t = random_checkpoint(hf)
    d = hf["hidden_size"]
    logits = t["model.embed_tokens.weight"][TOKENS[0]] @ t["model.layers.0.block_sparse_moe.gate.weight"].T
    assert logits.shape == (len(TOKENS[0]), 4) and d == 32
    assert len({tuple(sorted(np.argsort(-row)[:2])) for row in logits}) > 1


def test_sharded_checkpoint_equals_single_file(tmp_path):
    hf = FAMILIES["qwen3_moe"]
    tensors = random_checkpoint(hf, seed=3)
    single = nets.load_hf_checkpoint(write_checkpoint(tmp_path / "one", hf, tensors))
    sharded = nets.load_hf_checkpoint(write_checkpoint(tmp_path / "three", hf, tensors, shards=3))
    assert np.array_equal(our_logits(single), our_logits(sharded))


def test_bfloat16_checkpoint_is_cast_to_param_dtype(tmp_path):
    hf = FAMILIES["llama"]
    tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in random_checkpoint(hf).items()}
    model = nets.load_hf_checkpoint(write_checkpoint(tmp_path, hf, tensors))
    assert model.embed.embedding[...].dtype == jnp.float32
    expected = reference_logits(hf, {k: v.astype(np.float32) for k, v in tensors.items()}, TOKENS[0])
    np.testing.assert_allclose(our_logits(model), expected, atol=LOGIT_TOL, rtol=LOGIT_TOL)


def _broken(tmp_path, family="llama", config_changes=None, drop=(), add=None, reshape=None):
    hf = {**FAMILIES[family], **(config_changes or {})}
    tensors = random_checkpoint(FAMILIES[family])
    for name in drop:
        del tensors[name]
    tensors.update(add or {})
    if reshape:
        tensors[reshape] = tensors[reshape][:-1]
    return write_checkpoint(tmp_path, hf, tensors)


@pytest.mark.parametrize("case,message", [
    (dict(drop=["model.layers.1.self_attn.k_proj.weight"]), r"tensor='model.layers.1.self_attn.k_proj.weight': missing"),
    (dict(add={"model.layers.0.self_attn.o_proj.bias": np.zeros(32, np.float32)}),
     r"tensor='model.layers.0.self_attn.o_proj.bias': not used by the llama mapping"),
    (dict(reshape="model.layers.0.mlp.up_proj.weight"), r"up_proj.weight.: checkpoint shape \(39, 32\), the config needs \(40, 32\)"),
    (dict(config_changes={"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}), r"rope_scaling="),
    (dict(config_changes={"quantization_config": {"quant_method": "gptq"}}), r"quantization_config"),
    (dict(family="qwen3_moe", config_changes={"norm_topk_prob": False}), r"norm_topk_prob=false"),
    (dict(config_changes={"model_type": "gpt2"}), r"model_type='gpt2': weights load for llama"),
])
def test_checkpoint_that_would_load_wrongly_is_refused(case, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        nets.load_hf_checkpoint(_broken(tmp_path, **case))


def test_checkpoint_without_weights_or_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no readable config.json"):
        nets.load_hf_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(FAMILIES["llama"]))
    with pytest.raises(ValueError, match="has neither model.safetensors nor model.safetensors.index.json"):
        nets.load_hf_checkpoint(tmp_path)


def _params(model):
    return {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _perturbed(cfg, param_dtype=jnp.float32, seed=0):
    """A model with random parameters (as after training; built from shapes, no initialiser runs)."""
    abstract = nnx.eval_shape(lambda: nets.TransformerLM(cfg, rngs=nnx.Rngs(0), param_dtype=param_dtype))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    leaves = [(p, v.replace(jnp.asarray(0.3 * rng.standard_normal(v.shape), param_dtype)))
              for p, v in nnx.to_flat_state(state)]
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


SAVE_CASES = {
    "qwen3_moe-hf-layout": nets.ModelConfig(
        vocab_size=50, d_model=32, n_layers=3,
        attention=nets.AttentionConfig(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=8, qk_norm=True),
        ffn=nets.FFNConfig(kind="moe", d_ff=40, n_experts=4, top_k=2, d_expert=16, moe_start=1)),
    "qwen2-hf-layout": nets.ModelConfig(
        vocab_size=50, d_model=32, n_layers=2, tie_embeddings=True,
        attention=nets.AttentionConfig(kind="gqa", n_heads=4, n_kv_heads=2, head_dim=8, qkv_bias=True)),
    "mfa-moe-own-layout": nets.zoo.default_config().replace(n_layers=3, d_model=32, vocab_size=50, attention={
        "head_dim": 8, "q_rank": 16}, ffn={"d_ff": 40, "d_expert": 16}),
    "mla-own-layout": nets.ModelConfig(
        vocab_size=50, d_model=32, n_layers=2,
        attention=nets.AttentionConfig(kind="mla", n_heads=4, n_kv_heads=4, head_dim=8, q_rank=16, kv_rank=16,
                                       rope_dim=4)),
    "gpt2-own-layout": nets.zoo.get("gpt2-small").replace(vocab_size=50, d_model=32, n_layers=2, max_seq_len=32,
                                                          attention={"n_heads": 4, "n_kv_heads": 4, "head_dim": 8},
                                                          ffn={"d_ff": 64}),
}


@pytest.mark.parametrize("name", sorted(SAVE_CASES))
@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
def test_save_and_load_safetensors_is_bit_exact(name, param_dtype, tmp_path):
    cfg = SAVE_CASES[name]
    model = _perturbed(cfg, param_dtype)
    path = nets.save_safetensors(model, tmp_path / "out")
    back = nets.load_safetensors(path)
    assert back.cfg == cfg
    before, after = _params(model), _params(back)
    assert before.keys() == after.keys()
    for key in before:  # same parameters and same config: the same network
        assert before[key].dtype == after[key].dtype and np.array_equal(before[key], after[key]), key
    with safe_open(str(path), framework="numpy") as f:
        assert nets.ModelConfig.from_json(f.metadata()["nets.model_config"]) == cfg
        hf_names = any(k.startswith("model.layers.") for k in f.keys())
    assert hf_names == name.endswith("hf-layout") == (tmp_path / "out" / "config.json").exists()


def test_hf_layout_export_is_a_hugging_face_checkpoint(tmp_path):
    """The exported directory has Hugging Face's names and config: the independent reference reads it."""
    cfg = SAVE_CASES["qwen3_moe-hf-layout"]
    model = _perturbed(cfg)
    nets.save_safetensors(model, tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert nets.from_hf(hf).replace(name=cfg.name, source=cfg.source) == cfg
    with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (4 * 8, 32)  # [out, in]
    reference = reference_logits({**hf, "mlp_only_layers": hf["mlp_only_layers"]}, tensors, TOKENS[0])
    np.testing.assert_allclose(our_logits(model), reference, atol=LOGIT_TOL, rtol=LOGIT_TOL)
    assert np.array_equal(our_logits(nets.load_hf_checkpoint(tmp_path)), our_logits(model))


def test_load_safetensors_needs_our_metadata(tmp_path):
    write_checkpoint(tmp_path, FAMILIES["llama"], random_checkpoint(FAMILIES["llama"]))
    with pytest.raises(ValueError, match="no nets.model_config metadata .* use nets.load_hf_checkpoint"):
        nets.load_safetensors(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        nets.load_safetensors(tmp_path / "config.json")
