"""ModelConfig: validation names the field, exact JSON round trip, strict loading."""

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nets import AttentionConfig, FFNConfig, ModelConfig, zoo


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_configs_round_trip_json_exactly(name):
    cfg = zoo.get(name)
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.to_json() == cfg.to_json()


def test_loading_rejects_unknown_and_missing_keys():
    data = json.loads(zoo.default_config().to_json())
    data["attention"]["n_head"] = 4
    with pytest.raises(ValueError, match=r"attention\.n_head: unknown key"):
        ModelConfig.from_dict(data)
    data = json.loads(zoo.default_config().to_json())
    del data["ffn"]["top_k"]
    with pytest.raises(ValueError, match=r"ffn\.top_k: missing key"):
        ModelConfig.from_dict(data)
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelConfig.from_json("{not json")


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: AttentionConfig(kind="gqa", n_heads=6, n_kv_heads=4), "attention.n_kv_heads"),
        (lambda: AttentionConfig(kind="sparse"), "attention.kind"),
        (lambda: AttentionConfig(kind="mha", n_heads=4, n_kv_heads=2), "attention.n_kv_heads"),
        (lambda: AttentionConfig(kind="mfa", n_heads=4, n_kv_heads=1, q_rank=0), "attention.q_rank"),
        (lambda: AttentionConfig(kind="mla", n_heads=4, n_kv_heads=4, kv_rank=0, rope_dim=8), "attention.kv_rank"),
        (lambda: FFNConfig(kind="moe", n_experts=4, top_k=5, d_expert=8), "ffn.top_k"),
        (lambda: FFNConfig(kind="dense", d_ff=0), "ffn.d_ff"),
        (lambda: ModelConfig(d_model=-1), "d_model"),
        (lambda: ModelConfig(d_model=32, attention=AttentionConfig(kind="mfa", n_heads=2, n_kv_heads=1,
                                                                    head_dim=8, q_rank=64)), "attention.q_rank"),
        (lambda: ModelConfig(norm="batchnorm"), "norm"),
        (lambda: ModelConfig(n_layers=2, ffn=FFNConfig(kind="moe", n_experts=2, top_k=1, d_expert=8,
                                                        moe_start=2)), "ffn.moe_start"),
    ],
)
def test_each_bad_value_names_its_field(build, field):
    with pytest.raises(ValueError) as err:
        build()
    assert str(err.value).startswith(field + "=")


_INT_FIELDS = {
    AttentionConfig: ["n_heads", "n_kv_heads", "head_dim"],
    FFNConfig: ["d_ff", "moe_every"],
    ModelConfig: ["vocab_size", "d_model", "n_layers", "max_seq_len"],
}
_BAD_VALUES = st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.text(max_size=3), st.none(),
                        st.booleans())


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_invalid_configs_from_hypothesis_raise_value_error_naming_the_field(data):
    cls = data.draw(st.sampled_from(list(_INT_FIELDS)))
    name = data.draw(st.sampled_from(_INT_FIELDS[cls]))
    value = data.draw(_BAD_VALUES)
    prefix = {AttentionConfig: "attention.", FFNConfig: "ffn.", ModelConfig: ""}[cls]
    with pytest.raises(ValueError) as err:
        cls(**{name: value})
    assert str(err.value).startswith(f"{prefix}{name}=")


@settings(max_examples=100, deadline=None)
@given(heads=st.integers(1, 16), kv=st.integers(1, 16))
def test_gqa_divisibility_is_exactly_the_rule(heads, kv):
    if heads % kv == 0:
        assert AttentionConfig(kind="gqa", n_heads=heads, n_kv_heads=kv).group_size == heads // kv
    else:
        with pytest.raises(ValueError, match=r"^attention\.n_kv_heads="):
            AttentionConfig(kind="gqa", n_heads=heads, n_kv_heads=kv)


def test_configs_are_frozen_and_replace_validates():
    cfg = zoo.default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 3  # type: ignore[misc]
    assert cfg.replace(attention={"n_heads": 8}).attention.n_heads == 8
    with pytest.raises(ValueError, match=r"^ffn\.top_k="):
        cfg.replace(ffn={"top_k": 99})


def test_moe_layer_pattern_matches_the_papers():
    step3 = zoo.get("step-3")
    assert step3.n_moe_layers == 56 and step3.layer_kinds[:4] == ("dense",) * 4 and step3.layer_kinds[60] == "dense"
    glam = zoo.get("glam-64e")
    assert glam.layer_kinds[:4] == ("dense", "moe", "dense", "moe") and glam.n_moe_layers == 16
    assert zoo.get("deepseek-v3").n_moe_layers == 58
