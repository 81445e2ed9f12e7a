"""The papers' tables beside ours (pipeline/report/papers.py) on synthetic metrics: the CSVs of papers/
are read as transcribed, each table applies to the process its paper used, and the Min-SNR
sections report a grid that reproduces the paper's claims as agreeing and one that reverses
them as reversed."""

import numpy as np
import pytest

from conftest import ROOT, experiment_params
from pipeline.report import papers
from pipeline.params import load, parse

TABLE1 = papers.min_snr_table1(ROOT / "papers" / "minsnr_2303.09556_table1_unet.csv")
TABLE2 = papers.min_snr_table2(ROOT / "papers" / "minsnr_2303.09556_table2_gamma.csv")
STEPS = (800, 1600, 2400, 3200, 4000)


@pytest.fixture(scope="module")
def params():
    return parse(experiment_params("min_snr"))


def fake_results(params, fid_of, noise=0.01):
    """Every cell finished, its FID at snapshot s = fid_of(cell) * 4000 / s (falling with steps)."""
    rng = np.random.default_rng(0)
    results = {}
    for cell_id, cell in params.cells.items():
        final = fid_of(cell_id, cell)
        results[cell_id] = {"status": "ok", "fid": final, "fid_boot": list(final + rng.normal(0, noise, 50)),
                            "fid_by_step": [{"step": s, "fid": final * 4000 / s} for s in STEPS]}
    return results


def min_snr_first(cell_id, cell):
    """min_snr (gamma 5) best on every target, then the other weightings; gamma 5 best of the sweep."""
    base = {"min_snr": 2.0, "trunc_snr": 3.0, "eps": 3.5, "native": 4.0}[cell.weighting]
    return base + (0.5 if "-g" in cell_id else 0.0) + {"eps": 0.0, "x0": 0.1, "v": 0.2}[cell.parameterization]


def test_the_tables_are_read_as_transcribed():
    assert set(TABLE1) == {("x0", "native"), ("x0", "min_snr"), ("eps", "native"), ("eps", "min_snr")}
    assert all(sorted(row) == [200000, 400000, 600000, 800000, 1000000] for row in TABLE1.values())
    assert set(TABLE2) == {("ViT", "x0"), ("ViT", "eps"), ("UNet", "x0"), ("UNet", "eps")}
    assert all(sorted(row) == [1.0, 5.0, 10.0, 20.0] for row in TABLE2.values())


def test_each_table_applies_to_its_papers_process(params):
    default = parse(experiment_params("samplers"))  # the default's process: VP, linear
    assert papers.ddpm_applies(default) and not papers.min_snr_applies(default)
    assert papers.min_snr_applies(params) and not papers.ddpm_applies(params)


def test_a_grid_with_the_papers_claims_agrees(params):
    text = "\n".join(papers.min_snr_sections(params, fake_results(params, min_snr_first), TABLE1, TABLE2))
    assert "| target | weighting | ours @ 800 |" in text and "paper @ 200k" in text
    for target in ("x0", "eps"):  # the paper has both; its min-SNR is lower at all 5 budgets
        line = next(l for l in text.splitlines() if l.startswith(f"- {target}: min_snr below native"))
        assert "at 5 of 5 of our budgets (paper: 5 of 5)" in line and line.endswith("holds")
    assert "- v: min_snr below native at 5 of 5 of our budgets (not in the paper's table)" in text
    assert "eps: min_snr lowest of 3 weightings at 5 of 5 budgets" in text
    assert "x0: min_snr lowest of 4 weightings at 5 of 5 budgets" in text
    assert "- x0: FID at gamma 20 minus at gamma 5: +0.500" in text and "gamma 5 lower" in text
    assert "best gamma ours 5, theirs 5" in text  # x0 vs both backbones


def test_a_grid_against_the_papers_claims_is_reversed(params):
    def reversed_(cell_id, cell):
        return 10.0 - min_snr_first(cell_id, cell)

    text = "\n".join(papers.min_snr_sections(params, fake_results(params, reversed_), TABLE1, TABLE2))
    line = next(l for l in text.splitlines() if l.startswith("- x0: min_snr below native"))
    assert "at 0 of 5 of our budgets" in line and line.endswith("reversed")
    assert "x0: min_snr lowest of 4 weightings at 0 of 5 budgets" in text


@pytest.mark.parametrize("vlb_nll, verdict", [(4.0, "holds"), (4.4, "reversed"), (4.2, "unresolved")])
def test_ddpm_table1s_nll_ordering_over_seeds(vlb_nll, verdict):
    """Paper: L with a fixed Sigma (3.70) below L_simple (3.75). Ours from the default grid's
    seeds (eps-eps 3, eps-vlb 2), Welch's interval of L_simple minus L."""
    params = load(ROOT / "params.yaml")
    table1 = papers.ddpm_table1(ROOT / "papers" / "ddpm_2006.11239_table1_nll.csv")
    assert table1 == {("eps", "vlb"): 3.70, ("eps", "eps"): 3.75}
    spread = {"": -0.01, "-s1": 0.0, "-s2": 0.01}
    results = {c: {"status": "ok", "nll_bpd": (vlb_nll if cell.weighting == "vlb" else 4.2)
                   + next((v for k, v in spread.items() if k and c.endswith(k)), -0.01)}
               for c, cell in params.cells.items()}
    line = papers.ddpm_nll_lines(params, results, table1)[-1]
    assert line.startswith("- paper: L, fixed Sigma 3.70 < L_simple 3.75") and line.endswith(verdict), line
    assert "(Welch over 3 and 2 seeds)" in line


def test_every_cell_diverged_is_said_not_raised(params):
    results = {c: {"status": "diverged", "step": 100} for c in params.cells}
    text = "\n".join(papers.min_snr_sections(params, results, TABLE1, TABLE2))
    assert "- x0: no gamma finished (every seed diverged): nothing to compare" in text
    assert "min_snr below native at 0 of 0 of our budgets" in text


# ----- EDM Table 2 ---------------------------------------------------------------------------------
EDM = papers.edm_table2(ROOT / "papers" / "edm_2206.00364_table2.csv")


def test_edm_table2_is_read_for_unconditional_cifar10():
    """Rows A-F in both columns; the values are the CSV's unconditional CIFAR-10 rows."""
    assert set(EDM) == {(row, col) for row in "ABCDEF" for col in ("VP", "VE")}
    import pandas as pd

    csv = pd.read_csv(ROOT / "papers" / "edm_2206.00364_table2.csv")
    uncond = csv[csv.dataset == "CIFAR-10 32x32 unconditional"]
    for (row, col), value in EDM.items():
        match = uncond[uncond.row_label.str.startswith(row) & uncond.note.str.startswith(f"column={col}")]
        assert match.value.tolist() == [value]


@pytest.mark.parametrize("name", ["edm_vp", "edm_ve"])
def test_edm_rows_map_in_their_experiments_only(name):
    edm = parse(experiment_params(name))
    assert papers.edm_applies(edm) and not papers.min_snr_applies(edm)
    assert papers._edm_groups(edm) == {"C": "eps-eps", "D": "edm-eps", "E": "edm-edm-lognormal"}
    for other in ("samplers", "min_snr", "ncsn_digits"):  # one EDM row at most (eps-eps)
        assert not papers.edm_applies(parse(experiment_params(other)))


@pytest.mark.parametrize("name, column", [("edm_vp", "VP"), ("edm_ve", "VE")])
def test_edm_lines_compare_each_step_with_the_papers_direction(name, column):
    """Our C -> D -> E with FIDs 3, 3.5, 2 (D worse, E best): C -> D is 'higher', D -> E 'lower';
    each verdict says whether that is the paper's direction in the process's column."""
    edm = parse(experiment_params(name))
    fid = {"C": 3.0, "D": 3.5, "E": 2.0}
    rows = {v: k for k, v in papers._edm_groups(edm).items()}
    results = fake_results(edm, lambda cell_id, cell: fid[rows[edm.group_of(cell_id)]])
    text = "\n".join(papers.edm_lines(edm, results, EDM))
    assert f"{column} column" in text and "| C (eps-eps) |" in text and "| 3 |" in text
    step = {l.split(":")[0]: l for l in text.splitlines() if l.startswith("- ") and "->" in l}
    paper_cd = EDM[("D", column)] - EDM[("C", column)]
    assert step["- C -> D"].endswith("holds" if paper_cd > 0 else "reversed")
    assert step["- D -> E"].endswith("holds")  # lower in both columns of the paper
    assert "ours D minus C +0.500" in step["- C -> D"]
    assert "Spearman rank correlation of mean FID with the paper's over the 3 rows" in text
