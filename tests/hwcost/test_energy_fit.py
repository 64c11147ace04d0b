"""hwcost.fit_energy: energy above idle = a * busy s + b * FLOPs + c * bytes, on synthetic power data."""

import numpy as np
import pytest

import hwcost
import nets

TRUE = {"busy_w": 60.0, "joules_per_flop": 0.5e-12, "joules_per_byte": 20e-12}


def _items() -> list[dict]:
    """Kernel items over several shape families of four kinds (no power yet)."""
    items = []
    for n, k in ((4096, 4096), (1024, 1024), (14336, 4096), (4096, 14336), (2048, 8192)):
        for m in (1, 64, 1024, 8192):
            items.append({"id": f"gemm/bf16/m{m}_n{n}_k{k}", "kind": "gemm", "dtype": "bf16",
                          "shape": {"m": m, "n": n, "k": k},
                          "describe": {"type": "gemm", "m": m, "n": n, "k": k, "bits_in": 16, "bits_out": 16}})
    for width in (1024, 2048, 4096):
        for tokens in (256, 8192, 65536):
            items.append({"id": f"norm/bf16/tokens{tokens}_width{width}", "kind": "norm", "dtype": "bf16",
                          "shape": {"tokens": tokens, "width": width},
                          "describe": {"type": "norm", "tokens": tokens, "width": width, "bits": 16}})
    for op, reads, flops in (("copy", 1, 1.0), ("swiglu", 2, 5.0)):
        for elements in (1 << 16, 1 << 22, 1 << 27):
            items.append({"id": f"elementwise/bf16/op{op}_elements{elements}", "kind": "elementwise", "dtype": "bf16",
                          "shape": {"op": op, "elements": elements},
                          "describe": {"type": "elementwise", "elements": elements, "bits": 16, "reads": reads,
                                       "writes": 1, "flops_per_element": flops}})
    for groups in (8, 64):
        for rows in (256, 4096, 32768):
            for phase in ((), ("train",)):
                shape = {"rows": rows, "groups": groups, "n": 2048, "k": 1024}
                items.append({"id": f"grouped_gemm/{phase[0] if phase else 'bf16'}/rows{rows}_groups{groups}",
                              "kind": "grouped_gemm", "dtype": "bf16", **({"phase": "train"} if phase else {}),
                              "shape": shape, "describe": {"type": "grouped_gemm", **shape, "bits": 16,
                                                           **({"phase": "train"} if phase else {})}})
    return items


def _data(noise: float = 0.0, seed: int = 0) -> dict:
    """A data file whose energies follow TRUE exactly (times some multiplicative noise)."""
    rng = np.random.default_rng(seed)
    items = _items()
    for item in items:
        k = hwcost.item_kernels(item["describe"])
        flops, moved = float(np.sum(k["flops"] * k["launches"])), float(np.sum(k["bytes"] * k["launches"]))
        # a time near a roofline's, off by a random factor so time, FLOPs and bytes are not collinear
        busy = max(flops / 5e14, moved / 3e12) * rng.uniform(1.0, 3.0) + 5e-6
        energy = TRUE["busy_w"] * busy + TRUE["joules_per_flop"] * flops + TRUE["joules_per_byte"] * moved
        energy *= float(np.exp(noise * rng.standard_normal()))
        item["timing"] = {"median_s": busy}
        item["power"] = {"seconds_per_call": busy, "energy_above_idle_j": energy, "mean_w": 0.0, "idle_w": 0.0}
    return {"schema": hwcost.DATA_SCHEMA, "device": {"kind": "synthetic"}, "items": items}


def test_fit_recovers_the_terms_of_exact_data_and_predicts_the_heldout_families():
    fit = hwcost.fit_energy(_data())
    assert fit.busy_w == pytest.approx(TRUE["busy_w"], rel=1e-6)
    assert fit.joules_per_flop == pytest.approx(TRUE["joules_per_flop"], rel=1e-6)
    assert fit.joules_per_byte == pytest.approx(TRUE["joules_per_byte"], rel=1e-6)
    errors = fit.errors()
    # the split is the time fit's: whole shape families held out by the rule
    data = hwcost.load_data(_data())
    assert dict(zip(fit.ids, fit.heldout)) == {i: h for i, h in zip(data.ids, data.heldout) if i in fit.ids}
    assert errors["heldout"]["n"] > 0 and errors["train"]["n"] > 3
    assert errors["heldout"]["mape"] < 1e-6 and errors["train"]["mape"] < 1e-6
    assert "held out" in fit.table()


def test_fit_with_noise_stays_near_the_terms_and_reports_its_heldout_error():
    noise = 0.05  # 5% log-normal noise per item
    fit = hwcost.fit_energy(_data(noise=noise, seed=1))
    for name, value in TRUE.items():
        assert getattr(fit, name) == pytest.approx(value, rel=0.25), name
    heldout = fit.errors()["heldout"]["mape"]
    assert 0.0 < heldout < 2 * noise  # the noise's mean absolute size is 0.8 * noise


def test_items_not_above_idle_are_left_out_and_too_few_items_is_one_error():
    data = _data()
    data["items"][0]["power"]["energy_above_idle_j"] = -1e-6
    fit = hwcost.fit_energy(data)
    assert fit.skipped == (data["items"][0]["id"],) and data["items"][0]["id"] not in fit.ids
    for item in data["items"]:
        item.pop("power")
    with pytest.raises(nets.InputError, match="power"):
        hwcost.fit_energy(data)
    data = _data()
    data["items"][1]["power"]["seconds_per_call"] = float("nan")
    with pytest.raises(nets.InputError, match="seconds_per_call"):
        hwcost.fit_energy(data)


def test_a_term_the_data_does_not_need_is_fitted_at_zero_not_negative():
    data = _data()
    for item in data["items"]:  # energies with no per-byte part, less a little: unconstrained c would go negative
        p, k = item["power"], hwcost.item_kernels(item["describe"])
        moved = float(np.sum(k["bytes"] * k["launches"]))
        p["energy_above_idle_j"] -= TRUE["joules_per_byte"] * moved * 1.3
    fit = hwcost.fit_energy(data)
    assert fit.joules_per_byte == 0.0 and fit.busy_w > 0 and fit.joules_per_flop >= 0
