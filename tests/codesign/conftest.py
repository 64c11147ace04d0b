"""Shared fixtures: a tiny MFA + MoE config (2 layers, d_model 64) written as a JSON file."""

import pytest

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
