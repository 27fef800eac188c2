"""The statistics of the comparison layer against values computed by hand.

Exact t quantiles: for 1 degree of freedom t(0.975) = tan(0.475 pi); for 2, t(p) = (2p - 1) sqrt(2 / (4p(1 - p))).
"""
from __future__ import annotations

import math

import pytest

from attnbench.report import stats

T1 = math.tan(math.pi * 0.475)  # 12.7062047361747
T2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))  # 4.30265272974946


def test_exact_t_quantiles():
    assert stats.t_quantile(1) == pytest.approx(T1, rel=1e-12)
    assert stats.t_quantile(2) == pytest.approx(T2, rel=1e-12)
    assert stats.t_quantile(2) == pytest.approx(4.302652729911275, rel=1e-9)  # the tabulated value
    assert stats.t_quantile(1e6) == pytest.approx(1.959964, rel=1e-5)  # the normal limit


def test_mean_ci_by_hand():
    e = stats.mean_ci([1.0, 2.0, 3.0])
    assert (e.n, e.mean, e.std) == (3, 2.0, 1.0)
    assert e.ci95 == pytest.approx(T2 / math.sqrt(3), rel=1e-12)  # 2.4841
    e = stats.mean_ci([2.0, 4.0])  # sd sqrt(2), t with 1 dof
    assert e.ci95 == pytest.approx(T1 * math.sqrt(2) / math.sqrt(2), rel=1e-12)


def test_n_1_and_n_0_have_no_interval():
    e = stats.mean_ci([3.5])
    assert (e.n, e.mean, e.std, e.ci95) == (1, 3.5, None, None)
    assert stats.mean_ci([]) == stats.Estimate(0, None)


def test_paired_difference_by_hand():
    x, base = {0: 2.0, 1: 4.0, 2: 9.0}, {0: 1.0, 1: 2.0, 2: 6.0, 3: 100.0}  # seed 3 has no partner
    d = stats.paired_diff(x, base)  # differences 1, 2, 3
    assert (d.method, d.diff, d.dof) == ("paired", 2.0, 2)
    assert d.ci95 == pytest.approx(T2 / math.sqrt(3), rel=1e-12)


def test_welch_difference_by_hand():
    # a: mean 2, var 1, n 3; b: mean 5, var 20/3, n 4; se^2 = 1/3 + 5/3 = 2
    # dof = 2^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 216/53
    d = stats.welch_diff([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0])
    assert (d.method, d.diff) == ("welch", -3.0)
    assert d.dof == pytest.approx(216 / 53, rel=1e-12)
    assert d.ci95 == pytest.approx(2.7562848743595714 * math.sqrt(2), rel=1e-9)
    assert stats.welch_diff([1.0], [2.0, 3.0]).ci95 is None  # n = 1 on a side: no interval
    exact = stats.welch_diff([1.0, 1.0], [2.0, 2.0])
    assert (exact.diff, exact.ci95) == (-1.0, 0.0)


def test_verdicts():
    lower = True
    assert stats.verdict(stats.Difference(-0.5, 0.1, "paired"), lower) == "better"
    assert stats.verdict(stats.Difference(0.5, 0.1, "paired"), lower) == "worse"
    assert stats.verdict(stats.Difference(-0.05, 0.1, "welch"), lower) == "within noise"
    assert stats.verdict(stats.Difference(0.5, 0.1, "welch"), lower_is_better=False) == "better"
    assert stats.verdict(stats.Difference(0.5, None, "welch"), lower) == ""  # no CI with n = 1
