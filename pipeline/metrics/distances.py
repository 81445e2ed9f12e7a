"""Distribution distances for low-dimensional point data (the 2-D Swiss roll), where FID's
Inception or classifier features mean nothing: plain statistics on the points themselves.

    sliced_wasserstein  SW_2 = sqrt(E_theta W_2^2(theta.x, theta.y)) over random unit
                        directions theta, each 1-D W_2 from matched quantiles
                        (Rabin et al. 2011; Bonneel et al. 2015)
    mmd                 unbiased MMD^2 with a sum of Gaussian kernels whose bandwidths are
                        the median pairwise distance times (0.5, 1, 2) (Gretton et al. 2012)

Both are deterministic given the seed. The unbiased MMD^2 of two samples of one distribution
is zero in expectation (it can be slightly negative); SW of finite samples is not, so compare
models at one sample size against the held-out floor at the same size.
"""

import torch

__all__ = ["sliced_wasserstein", "mmd", "point_metrics"]

_QUANTILES = 512


def _quantiles(x, n):
    q = torch.linspace(0, 1, n, dtype=x.dtype)
    return torch.quantile(x, q, dim=0)


def sliced_wasserstein(x, y, projections=256, seed=0):
    """SW_2 between point clouds x [N, D] and y [M, D] (any N, M), in data units."""
    x, y = x.double().flatten(1), y.double().flatten(1)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    n = min(_QUANTILES, len(x), len(y))
    qx, qy = _quantiles(x @ theta, n), _quantiles(y @ theta, n)
    return float(((qx - qy) ** 2).mean().sqrt())


def mmd(x, y, scales=(0.5, 1.0, 2.0), max_points=1000, seed=0):
    """Unbiased MMD^2 with Gaussian kernels at `scales` times the median pairwise distance of
    the pooled sample (at most `max_points` of each, drawn with the seed)."""
    g = torch.Generator().manual_seed(seed)
    x, y = x.double().flatten(1), y.double().flatten(1)
    if len(x) > max_points:
        x = x[torch.randperm(len(x), generator=g)[:max_points]]
    if len(y) > max_points:
        y = y[torch.randperm(len(y), generator=g)[:max_points]]
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).pow(2)
    sub = torch.randperm(len(pooled), generator=g)[:1000]  # the median from 1000 points is plenty
    median = d2[sub][:, sub][tuple(torch.triu_indices(len(sub), len(sub), 1))].median()
    kernel = sum(torch.exp(-d2 / (2 * s**2 * median)) for s in scales)
    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def point_metrics(samples, reference, seed=0):
    """{'sw', 'mmd'} of samples against reference points."""
    return {"sw": sliced_wasserstein(samples, reference, seed=seed),
            "mmd": mmd(samples, reference, seed=seed)}
