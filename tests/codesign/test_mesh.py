"""The mesh configuration, the logical-axis names of every parameter and the rules table (one process, no mesh)."""

from __future__ import annotations

import types

import jax
import pytest
from flax import nnx

import codesign
import nets
from codesign import parallel

TINY_MLA = nets.zoo.default_config().replace(
    name="tiny-mla-moe", d_model=64, n_layers=2, max_seq_len=32,
    attention={"kind": "mla", "n_heads": 4, "n_kv_heads": 4, "head_dim": 16, "q_rank": 32, "kv_rank": 32,
               "rope_dim": 8},
    ffn={"d_ff": 128, "n_experts": 4, "top_k": 2, "d_expert": 32})
TINY_MFA = TINY_MLA.replace(name="tiny-mfa-moe", attention={"kind": "mfa", "n_heads": 4, "n_kv_heads": 1,
                                                            "head_dim": 16, "q_rank": 32, "kv_rank": 0,
                                                            "rope_dim": 0})


def test_parse_mesh_text_and_dict_round_trip():
    pc = parallel.parse_mesh("data=2, fsdp=4")
    assert (pc.data, pc.fsdp, pc.tensor, pc.expert) == (2, 4, 1, 1)
    assert pc.sizes(8) == {"data": 2, "fsdp": 4, "tensor": 1, "expert": 1}
    assert parallel.parse_mesh(pc.to_text()) == pc
    assert parallel.ParallelConfig.from_dict(pc.to_dict()) == pc
    assert parallel.parse_mesh("tensor=2").sizes(8)["data"] == 4  # data takes the devices left
    assert parallel.parse_mesh("").sizes(3) == {"data": 3, "fsdp": 1, "tensor": 1, "expert": 1}


@pytest.mark.parametrize("text, field", [("data=2,fsdp=x", "mesh.fsdp"), ("pipe=2", "mesh"), ("data=2,data=2", "mesh"),
                                         ("tensor=0", "mesh.tensor"), ("data", "mesh")])
def test_parse_mesh_errors_name_the_field(text, field):
    with pytest.raises(nets.InputError) as err:
        parallel.parse_mesh(text)
    assert err.value.field == field


def test_mesh_sizes_must_cover_the_devices():
    with pytest.raises(nets.InputError, match="device count 8") as err:
        parallel.parse_mesh("data=2,tensor=2").sizes(8)
    assert err.value.field == "mesh"
    with pytest.raises(nets.InputError, match="must divide the device count 6"):
        parallel.parse_mesh("fsdp=4").sizes(6)
    with pytest.raises(nets.InputError):
        codesign.TrainConfig(mesh="fsdp=two")


@pytest.mark.parametrize("cfg", [TINY_MFA, TINY_MLA], ids=["mfa", "mla"])
def test_every_parameter_has_logical_names(cfg):
    model = nnx.eval_shape(lambda: nets.TransformerLM(cfg, rngs=nnx.Rngs(0)))
    params = nnx.state(model, nnx.Param)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = nets.logical_axes(path, leaf.ndim)
        assert len(names) == leaf.ndim
        assert any(n is not None for n in names), jax.tree_util.keystr(path)
    names = nets.tree_logical_axes(params)
    attn = names["segments"][0]["blocks"][0]["attn"]
    assert attn["wq_b"]["kernel"].get_value() == ("layers", "q_lora", "heads")
    if cfg.attention.kind == "mla":
        assert attn["wkv_a"]["kernel"].get_value() == ("layers", "embed", "kv_lora")
        assert attn["wkv_b"]["kernel"].get_value() == ("layers", "kv_lora", "heads")
    else:
        assert attn["wk"]["kernel"].get_value() == ("layers", "embed", "kv_heads")
    ffn = names["segments"][1]["blocks"][0]["ffn"]
    assert ffn["expert_up"].get_value() == ("layers", "expert", "embed", "mlp")
    assert nets.logical_axes(("knobs", "ratio"), 1) == (None,)  # unknown leaves: replicated


def test_rules_map_names_to_mesh_axes_where_they_divide():
    mesh = types.SimpleNamespace(shape={"data": 1, "fsdp": 2, "tensor": 4, "expert": 2})
    spec = nets.logical_spec(("layers", "expert", "embed", "mlp"), (1, 4, 64, 32), mesh, parallel.RULES)
    assert tuple(spec) == (None, "expert", "fsdp", "tensor")
    # MFA's single K/V head is never split over tensor; heads that do not divide stay whole
    assert tuple(nets.logical_spec(("embed", "kv_heads"), (64, 16), mesh, parallel.RULES)) == ("fsdp", None)
    assert tuple(nets.logical_spec(("q_lora", "heads"), (32, 6), mesh, parallel.RULES)) == ("fsdp", None)
    # one mesh axis is used once per array
    assert tuple(nets.logical_spec(("embed", "kv_lora"), (64, 40), mesh, parallel.RULES)) == ("fsdp", None)
    assert tuple(nets.logical_spec(("activation_batch", None), (16, 8), mesh, parallel.RULES)) == (("fsdp", "expert"),
                                                                                                   None)


def test_distributed_start_up_reads_the_environment(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "CODESIGN_DISTRIBUTED"):
        monkeypatch.delenv(name, raising=False)
    assert parallel.initialize_distributed() is False  # one process: nothing to start
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:12345")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    with pytest.raises(nets.InputError) as err:
        parallel.initialize_distributed()
    assert err.value.field == "JAX_NUM_PROCESSES"


def test_cli_mesh_option_is_validated_before_any_work(codesign_main, tmp_path):
    result = codesign_main("train", "--mesh", "data=2,pipe=4", "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 2
    assert "mesh='data=2,pipe=4'" in result.stderr and "data, fsdp, tensor, expert" in result.stderr
    result = codesign_main("sweep", "--mesh", "tensor=x", "--out", str(tmp_path / "sweep"), "--quiet")
    assert result.returncode == 2 and "mesh.tensor='x'" in result.stderr
