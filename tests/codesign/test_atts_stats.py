"""Takeover rate per turn: its standard error counts questions, not chunks."""

import numpy as np

from codesign.atts import turn_rates


def _levels(taken_Qxm):
    """(Q, m, 1) decision levels: 2 where taken over, 0 where accepted."""
    return np.where(taken_Qxm, 2, 0)[:, :, None]


def test_the_rate_se_of_clustered_samples_counts_questions_not_chunks():
    rng = np.random.default_rng(0)
    Q, m, alpha = 400, 16, 0.25
    clustered = _levels(np.repeat(rng.random((Q, 1)) < alpha, m, axis=1))   # a question's m samples agree
    independent = _levels(rng.random((Q, m)) < alpha)
    c, i = turn_rates(clustered, alpha, min_n=1), turn_rates(independent, alpha, min_n=1)
    rate = c["rate_by_turn"][0]
    assert np.isclose(c["se_by_turn"][0], np.sqrt(rate * (1 - rate) / (Q - 1)), rtol=1e-6)   # Q units, not Q m
    assert np.isclose(c["se_binomial_by_turn"][0], np.sqrt(alpha * (1 - alpha) / (Q * m)))
    assert c["se_by_turn"][0] > 3 * c["se_binomial_by_turn"][0]
    assert abs(i["se_by_turn"][0] / i["se_binomial_by_turn"][0] - 1) < 0.15   # independent: about binomial
