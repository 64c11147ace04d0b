"""Shared fixtures: a tiny MFA + MoE config (2 layers, d_model 64) written as a JSON file; a tiny untrained
ATTS draft/target pair."""

import pytest
from flax import nnx

import nets

TINY = nets.zoo.default_config().replace(
    name="tiny-mfa-moe", d_model=64, n_layers=2, max_seq_len=64,
    attention={"n_heads": 2, "head_dim": 32, "q_rank": 32},
    ffn={"d_ff": 128, "n_experts": 4, "top_k": 2, "d_expert": 32})


@pytest.fixture(scope="session")
def tiny_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(TINY.to_json())
    return str(path)


def _tiny_decoder(name: str, seed: int) -> nets.TransformerLM:
    cfg = nets.ModelConfig(name=name, d_model=16, n_layers=1, max_seq_len=128,
                           attention=nets.AttentionConfig(n_heads=2, n_kv_heads=2, head_dim=8),
                           ffn=nets.FFNConfig(d_ff=32))
    return nets.TransformerLM(cfg, rngs=nnx.Rngs(params=seed))


@pytest.fixture(scope="module")
def tiny_atts_pair():
    """(draft, target): one-layer, d_model 16 decoders, randomly initialised (seeds 1 and 2)."""
    return _tiny_decoder("draft", 1), _tiny_decoder("target", 2)
