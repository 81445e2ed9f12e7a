"""The grid's figures from metrics.csv (pipeline/report/plots.py)."""

import pandas as pd

from pipeline.report.plots import heatmap_grid


def test_the_heatmap_keeps_rows_that_share_a_square_apart():
    """Two schedules of one objective (or two gammas, two t samplers) share (parameterization /
    Sigma, weighting): the heatmap names each by its replicate group, never averages them."""
    rows = [("eps-eps", "eps-eps", 2.0), ("eps-eps-s1", "eps-eps", 4.0), ("eps-eps-cosine", "eps-eps-cosine", 10.0),
            ("x0-eps", "x0-eps", 5.0)]
    metrics = pd.DataFrame([{"cell": c, "group": g, "parameterization": c.split("-")[0], "weighting": "eps",
                             "Sigma": "fixed_large", "metric": "fid", "value": v} for c, g, v in rows])
    grid = heatmap_grid(metrics)["eps"]
    assert grid.to_dict() == {"eps / fixed_large / eps-eps": 3.0, "eps / fixed_large / eps-eps-cosine": 10.0,
                              "x0 / fixed_large": 5.0}
