"""Pareto mask and hypervolume against brute-force references."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from codesign import hypervolume, pareto_mask


def _naive_mask(pts):
    out = []
    for i, p in enumerate(pts):
        out.append(not any((q <= p).all() and (q < p).any() for j, q in enumerate(pts) if j != i))
    return np.array(out)


def _grid_hypervolume(pts, ref, n=400):
    xs = np.linspace(0, ref[0], n, endpoint=False) + ref[0] / n / 2
    ys = np.linspace(0, ref[1], n, endpoint=False) + ref[1] / n / 2
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    covered = np.zeros_like(gx, dtype=bool)
    for a, b in pts:
        covered |= (gx >= a) & (gy >= b)
    return covered.mean() * ref[0] * ref[1]


points = st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(points)
def test_mask_matches_naive(pts):
    pts = np.array(pts)
    np.testing.assert_array_equal(pareto_mask(pts), _naive_mask(pts))


@settings(max_examples=30, deadline=None)
@given(points)
def test_hypervolume_matches_grid_count(pts):
    pts = np.array(pts)
    assert abs(hypervolume(pts, (1.0, 1.0)) - _grid_hypervolume(pts, (1.0, 1.0))) < 0.01


def test_hypervolume_of_known_staircase():
    pts = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2], [0.9, 0.9]])
    assert np.isclose(hypervolume(pts, (1, 1)), 0.8 * 0.2 + 0.5 * 0.3 + 0.2 * 0.3)
