"""Metrics against scipy and hand-computed values."""

import numpy as np
import pytest
import torch
from scipy import stats

from fdperf import metrics


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 10, size=40).astype(float)  # many ties
    pred = true + rng.normal(0, 3, size=40)
    pred[:5] = pred[0]
    assert metrics.spearman(pred, true) == pytest.approx(stats.spearmanr(pred, true).statistic, abs=1e-12)


def test_spearman_hand_values_and_inputs():
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert metrics.spearman(torch.tensor([4.0, 3, 2, 1]), [1, 2, 3, 4]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in length"):
        metrics.spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-finite"):
        metrics.spearman([1, float("nan")], [1, 2])


def test_relative_l2_and_l2_hand_computed():
    true = [60.0, 70.0, 80.0, 100.0]  # span 40
    pred = [64.0, 70.0, 72.0, 100.0]  # errors 4, 0, -8, 0
    assert metrics.relative_l2(pred, true) == pytest.approx(((0.1**2) + (0.2**2)) / 4 * 100)
    assert metrics.l2(pred, true) == pytest.approx((16 + 64) / 4)
    with pytest.raises(ValueError, match="not all equal"):
        metrics.relative_l2([1, 2], [3, 3])


def test_aiou_hand_computed():
    true = [[10, 50], [20, 60], [30, 70], [10, 20]]
    pred = [[10, 50], [30, 60], [50, 90], [30, 40]]  # IoU 1, 0.75, 1/3, 0
    assert metrics.tiou(pred, true) == pytest.approx([1.0, 0.75, 1 / 3, 0.0])
    assert metrics.aiou(pred, true, 0.5) == pytest.approx(50.0)
    assert metrics.aiou(pred, true, 0.75) == pytest.approx(50.0)
    assert metrics.aiou(pred, true, 0.76) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="threshold"):
        metrics.aiou(pred, true, 75)
