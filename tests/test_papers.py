"""The papers' tables beside ours (pipeline/report/papers.py) on synthetic metrics: the CSVs of papers/
are read as transcribed, each table applies to the process its paper used, and the Min-SNR
sections report a grid that reproduces the paper's claims as agreeing and one that reverses
them as reversed."""

import numpy as np
import pandas as pd
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


# ----- Improved DDPM ---------------------------------------------------------------------------
def curve(noise, seed, steps=4000, every=100):
    """A loss log falling as 1/step, times log-normal noise of std `noise` per logged point."""
    rng = np.random.default_rng(seed)
    step = np.arange(every, steps + 1, every)
    return pd.DataFrame({"step": step, "loss": 10.0 / step * np.exp(rng.normal(0, noise, len(step)))})


def test_loss_noise_measures_the_spread_about_the_trend():
    """A smooth power law has no noise; independent log-normal noise of std s per point is
    measured as s."""
    assert papers.loss_noise(curve(0.0, 0)) == pytest.approx(0.0, abs=1e-9)
    long = curve(0.05, 1, steps=400_000)
    assert papers.loss_noise(long) == pytest.approx(0.05, rel=0.05)
    assert np.isnan(papers.loss_noise(pd.DataFrame({"step": [], "loss": []})))  # diverged before its first log


@pytest.mark.parametrize("name", ["iddpm_linear", "iddpm_cosine"])
def test_iddpm_rows_map_in_their_experiments_only(name):
    iddpm = parse(experiment_params(name))
    assert papers.iddpm_applies(iddpm) and not papers.edm_applies(iddpm) and not papers.min_snr_applies(iddpm)
    assert papers._iddpm_groups(iddpm) == {"simple": "eps-simple", "hybrid": "eps-hybrid",
                                           "vlb": "eps-vlb-importance", "vlb_uniform": "eps-vlb-uniform"}
    for other in ("edm_vp", "min_snr", "samplers", "ncsn_digits"):
        assert not papers.iddpm_applies(parse(experiment_params(other)))
    assert not papers.iddpm_applies(load(ROOT / "params.yaml"))


@pytest.mark.parametrize("agree", [True, False])
def test_iddpm_findings_hold_on_a_grid_that_has_them_and_not_on_one_that_reverses_them(agree):
    """NLL: vlb < hybrid < simple, FID: vlb worse, hybrid equal to simple, importance-sampled
    L_vlb smoother: every finding holds; the reversed grid reverses each ordering."""
    iddpm = parse(experiment_params("iddpm_cosine"))
    rows = {v: k for k, v in papers._iddpm_groups(iddpm).items()}
    nll = {"simple": 3.0, "hybrid": 2.5, "vlb": 2.0, "vlb_uniform": 2.1}
    fid = {"simple": 1.0, "hybrid": 1.0, "vlb": 3.0, "vlb_uniform": 3.5}
    noise = {"simple": 0.05, "hybrid": 0.05, "vlb": 0.05, "vlb_uniform": 0.3}
    if not agree:
        nll = {k: 5.0 - v for k, v in nll.items()}
        fid = {**fid, "vlb": 0.5}
        noise = {**noise, "vlb": 0.5, "vlb_uniform": 0.05}
    row_of = {c: rows[iddpm.group_of(c)] for c in iddpm.cells}
    results = fake_results(iddpm, lambda c, cell: fid[row_of[c]])
    for i, c in enumerate(iddpm.cells):
        results[c]["nll_bpd"] = nll[row_of[c]] + 0.01 * (i % 3)
    curves = {c: curve(noise[row_of[c]], i) for i, c in enumerate(iddpm.cells)}
    text = "\n".join(papers.iddpm_lines(iddpm, results, curves))
    assert "cosine schedule" in text and "| eps-hybrid | L_hybrid" in text
    findings = {l.split(":")[0]: l for l in text.splitlines() if l.startswith("- ")}
    assert len(findings) == 6, text
    for what in ("- L_hybrid's NLL below L_simple's", "- L_vlb's NLL below L_hybrid's", "- L_vlb's NLL below L_simple's",
                 "- L_vlb's FID worse than L_simple's", "- importance sampling makes L_vlb train with less noise (loss noise, uniform minus importance)"):
        assert findings[what].endswith("holds" if agree else "reversed"), findings[what]
    assert findings["- at a similar FID"].endswith("similar (no resolved difference)")
