"""Paired comparison of two classifiers on the same images (the exact McNemar test)."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.measure import mcnemar_p, paired_comparison


def test_paired_comparison_counts_discordant_images_and_matches_the_exact_binomial_p_value():
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    a = np.array([0, 1, 2, 3, 4, 5, 6, 0, 0, 0])  # wrong on the last three
    b = np.array([0, 1, 2, 0, 0, 0, 0, 0, 0, 9])  # wrong on 3..8
    out = paired_comparison(y, a, b)
    # A alone right on images 3..6 (4), B alone right on image 9 (1): p = 2 * (C(5,0) + C(5,1)) / 2^5 = 0.375
    assert out == {"a_only_correct": 4, "b_only_correct": 1, "mcnemar_p": pytest.approx(0.375)}
    # 6 discordant images all one way: p = 2 / 64
    assert paired_comparison(np.zeros(6), np.zeros(6), np.ones(6))["mcnemar_p"] == pytest.approx(2 / 64)
    # identical predictions: nothing to test, p = 1
    assert paired_comparison(y, a, a) == {"a_only_correct": 0, "b_only_correct": 0, "mcnemar_p": 1.0}
    assert mcnemar_p(1, 4) == pytest.approx(0.375) and mcnemar_p(4, 1) == mcnemar_p(1, 4)  # counts summed over runs
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(30, 30) == 1.0


def test_paired_comparison_rejects_predictions_for_other_images():
    with pytest.raises(ValueError, match="same images"):
        paired_comparison(np.zeros(5), np.zeros(5), np.zeros(4))
