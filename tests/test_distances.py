"""The 2-D data's distances (pipeline/metrics/distances.py) on Gaussians with known answers."""

import math

import torch

torch.set_num_threads(1)

from pipeline.metrics.distances import mmd, point_metrics, sliced_wasserstein  # noqa: E402


def gaussian(n, seed, shift=(0.0, 0.0), scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64) * scale + torch.tensor(shift, dtype=torch.float64)


def test_sliced_wasserstein_of_a_shift():
    """W_2 between N(0, 1) and N(d, 1) along theta is |theta . d|; E_theta (theta . d)^2 = |d|^2/2 in 2-D."""
    x, y = gaussian(4000, 0), gaussian(4000, 1, shift=(1.0, 0.5))
    expected = math.sqrt((1.0 + 0.25) / 2)
    assert sliced_wasserstein(x, y, projections=512) == pytest_approx(expected, 0.06)
    assert sliced_wasserstein(x, gaussian(4000, 2)) < 0.08  # same distribution: finite-sample floor
    assert sliced_wasserstein(x, y) == sliced_wasserstein(x, y)  # deterministic


def test_sliced_wasserstein_of_a_scale():
    """Between N(0, 1) and N(0, 4) every 1-D projection differs by W_2 = |2 - 1| = 1."""
    x, y = gaussian(4000, 0), gaussian(4000, 1, scale=2.0)
    assert sliced_wasserstein(x, y) == pytest_approx(1.0, 0.08)


def test_mmd_is_zero_for_one_distribution_and_grows_with_the_shift():
    x = gaussian(800, 0)
    same = mmd(x, gaussian(800, 1))
    near, far = mmd(x, gaussian(800, 2, shift=(0.3, 0.0))), mmd(x, gaussian(800, 3, shift=(2.0, 0.0)))
    assert abs(same) < 5e-3
    assert 5 * abs(same) < near < far
    assert set(point_metrics(x, x[:100])) == {"sw", "mmd"}


def pytest_approx(value, abs_tol):
    import pytest

    return pytest.approx(value, abs=abs_tol)
