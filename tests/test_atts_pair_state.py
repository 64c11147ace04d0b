"""scripts/bench/atts_pair_state.py: the phases `atts_gpu_pair.py --state` keeps between calls."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import nets

_DIR = Path(__file__).resolve().parents[1] / "scripts" / "bench"
sys.path.insert(0, str(_DIR))
_spec = importlib.util.spec_from_file_location("atts_pair_state_script", _DIR / "atts_pair_state.py")
pair_state = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pair_state)


def _args(**changes):
    base = dict(task="chain", tiny=True, seed=0, m=4, max_turns=8, max_chunk=12, buf_len=96, dtype="auto",
                batch_questions=8, max_calibration=64, chain_level="auto", chain_aim=0.6, chain_steps=None,
                draft="base", n_accuracy=16, draft_select="band")
    return SimpleNamespace(**{**base, **changes})


def test_kept_phases_load_back_in_a_later_state(tmp_path):
    """(Models go through `save_model`/`load_model`, tested in tests/codesign/test_atts_models.py.)"""
    state = pair_state.PairState(tmp_path / "st", _args())
    assert not state.has("calibration")
    state.keep("calibration", {"questions": 8})
    (tmp_path / "bank.npz").write_bytes(b"scores")
    state.keep_bank(tmp_path / "bank.npz")
    later = pair_state.PairState(tmp_path / "st", _args(alphas=[0.1]))   # evaluation-only options are free
    assert later.has("calibration") and not later.has("train_draft")
    assert later.entry("calibration") == {"questions": 8, "from_state": str(tmp_path / "st")}
    later.bank_to(tmp_path / "copy.npz")
    assert (tmp_path / "copy.npz").read_bytes() == b"scores"


def test_a_state_made_with_other_settings_is_refused_naming_them(tmp_path):
    pair_state.PairState(tmp_path / "st", _args())
    with pytest.raises(nets.InputError, match=r"seed: 0 there, 1 now.*m: 4 there, 8 now|m: 4 there, 8 now.*seed"):
        pair_state.PairState(tmp_path / "st", _args(seed=1, m=8))


def test_a_draft_kept_under_another_selection_rule_is_refused(tmp_path):
    pair_state.PairState(tmp_path / "st", _args())
    with pytest.raises(nets.InputError, match="draft_select: 'band' there, 'last' now"):
        pair_state.PairState(tmp_path / "st", _args(draft_select="last"))
