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
DDPM = papers.ddpm_table2(ROOT / "papers" / "ddpm_2006.11239_table2.csv")
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
    assert papers.ddpm_applies(default, DDPM) and not papers.min_snr_applies(default)
    assert papers.min_snr_applies(params) and not papers.ddpm_applies(params, DDPM)


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


def test_seed_counts_follow_the_sentences_order():
    """"A minus B (n = a vs b seeds)" and "paper B < A: ours ... (n = b vs a seeds)": the
    default grid's eps-vlb (2 seeds) against its baseline eps-eps (3)."""
    params = load(ROOT / "params.yaml")
    results = {c: {"status": "ok", "fid": 10.0 if cell.weighting == "vlb" else 3.0, "fid_boot": None}
               for c, cell in params.cells.items()}
    groups = params.replicate_groups()
    diff = papers._compare(params, results, groups["eps-vlb"], groups["eps-eps"], "vlb-simple")
    assert papers._interval_text(diff).endswith("(n = 2 vs 3 seeds): holds")
    assert papers._interval_text(diff, better_first=True).endswith("(n = 3 vs 2 seeds): holds")


def test_one_seed_on_a_side_gives_no_interval_rather_than_nan():
    assert papers._welch_text([1.0], [2.0, 2.1], 0.95) == \
        "-1.050 (Welch over 1 and 2 seeds): unresolved (one seed on a side: no interval)"
    assert papers._welch_text([1.0, 1.2], [2.0, 2.1], 0.95).endswith("(Welch over 2 and 2 seeds): reversed")


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


def test_edm_lines_say_where_in_t_the_rows_denoisers_differ():
    """Profiles where C's eps error is 10x D's at t >= 900 only and E's equals D's, the seeds'
    spread about the row's value (x 1.3, 1.2, 0.5): each row's mean over seeds per range of t,
    and the ratio of consecutive rows."""
    edm = parse(experiment_params("edm_vp"))
    rows = {v: k for k, v in papers._edm_groups(edm).items()}
    results = fake_results(edm, lambda cell_id, cell: 1.0)
    t = np.arange(0, 1000, 25)
    spread = {"": 1.3, "-s1": 1.2, "-s2": 0.5}

    def mse(c):
        top = 0.1 if rows[edm.group_of(c)] == "C" else 0.01
        return np.where(t >= 900, top, 0.5) * spread[c[len(edm.group_of(c)):]]
    profiles = {c: pd.DataFrame({"t": t, "mse_eps": mse(c)}) for c in edm.cells}
    text = papers.edm_lines(edm, results, EDM, profiles)
    assert "| row | t 0-499 | t 500-699 | t 700-899 | t 900-999 |" in text
    assert "| C (eps-eps) | 0.5 | 0.5 | 0.5 | 0.1 |" in text and "| D (edm-eps) | 0.5 | 0.5 | 0.5 | 0.01 |" in text
    assert "| C / D | 1.00 | 1.00 | 1.00 | 10.00 |" in text and "| D / E | 1.00 | 1.00 | 1.00 | 1.00 |" in text
    assert not any("C / D" in line for line in papers.edm_lines(edm, results, EDM))  # no profiles, no table


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


def test_iddpm_rows_map_per_schedule_in_their_experiment_only():
    iddpm = parse(experiment_params("iddpm"))
    assert papers.iddpm_applies(iddpm) and not papers.edm_applies(iddpm) and not papers.min_snr_applies(iddpm)
    rows = {"simple": "simple", "hybrid": "hybrid", "vlb": "vlb-importance", "vlb_uniform": "vlb-uniform"}
    assert papers._iddpm_groups(iddpm) == {**{("linear", r): f"lin-{c}" for r, c in rows.items()},
                                           **{("cosine", r): f"cos-{c}" for r, c in rows.items()}}
    for other in ("edm_vp", "min_snr", "samplers", "ncsn_digits"):
        assert not papers.iddpm_applies(parse(experiment_params(other)))
    assert not papers.iddpm_applies(load(ROOT / "params.yaml"))
    # one linear L_simple row maps to DDPM Table 2: no ordering, so no DDPM block
    assert not papers.ddpm_applies(iddpm, DDPM) and papers.ddpm_applies(load(ROOT / "params.yaml"), DDPM)


def iddpm_grid(agree):
    """The iddpm experiment's grid with synthetic results: NLL vlb < hybrid < simple, FID vlb
    worse and hybrid equal to simple, importance-sampled L_vlb smoother, cosine's NLL lower by
    0.5 spent at t = 999 (or every ordering reversed); per-t terms that sum to the NLL."""
    iddpm = parse(experiment_params("iddpm"))
    rows = {v: k for k, v in papers._iddpm_groups(iddpm).items()}
    nll = {"simple": 3.0, "hybrid": 2.5, "vlb": 2.0, "vlb_uniform": 2.1}
    fid = {"simple": 1.0, "hybrid": 1.0, "vlb": 3.0, "vlb_uniform": 3.5}
    noise = {"simple": 0.05, "hybrid": 0.05, "vlb": 0.05, "vlb_uniform": 0.3}
    cosine = -0.5
    if not agree:
        nll = {k: 5.0 - v for k, v in nll.items()}
        fid = {**fid, "vlb": 0.5}
        noise = {**noise, "vlb": 0.5, "vlb_uniform": 0.05}
        cosine = +0.5
    key_of = {c: rows[iddpm.group_of(c)] for c in iddpm.cells}
    results = fake_results(iddpm, lambda c, cell: fid[key_of[c][1]])
    curves = {}
    for i, c in enumerate(iddpm.cells):
        schedule, row = key_of[c]
        last = 0.1 + (cosine if schedule == "cosine" else 0.0) + 0.01 * (i % 3)
        results[c]["nll_bpd_by_t"] = {"t=0": 0.2, "t=1-998": nll[row] - 0.3, "t=999": last}
        results[c]["nll_bpd"] = sum(results[c]["nll_bpd_by_t"].values())
        curves[c] = curve(noise[row], i, steps=20_000)
    return iddpm, results, curves


@pytest.mark.parametrize("agree", [True, False])
def test_iddpm_findings_hold_on_a_grid_that_has_them_and_not_on_one_that_reverses_them(agree):
    iddpm, results, curves = iddpm_grid(agree)
    text = "\n".join(papers.iddpm_lines(iddpm, results, curves))
    assert "| cosine | cos-hybrid | L_hybrid" in text and "| linear | lin-simple | L_simple" in text
    findings = {l.split(":")[0]: l for l in text.splitlines() if l.startswith("- ")}
    assert len(findings) == 6 * 2 + 4, text
    for schedule in ("linear", "cosine"):
        for what in ("L_hybrid's NLL below L_simple's", "L_vlb's NLL below L_hybrid's", "L_vlb's NLL below L_simple's",
                     "L_vlb's FID worse than L_simple's", "importance sampling makes L_vlb train with less noise"):
            line = next(v for k, v in findings.items() if k.startswith(f"- {what} ({schedule}"))
            assert line.endswith("holds" if agree else "reversed"), line
        assert findings[f"- at a similar FID ({schedule})"].endswith("similar (no resolved difference)")
    for row in ("L_simple", "L_hybrid", "L_vlb, importance", "L_vlb, uniform"):
        line = findings[f"- the cosine schedule improves NLL ({row})"]
        assert line.endswith("holds" if agree else "reversed"), line
    # where in t: every row's difference is at t = 999 alone, and the columns sum to the total
    table = [l for l in text.splitlines() if l.startswith("| cos-")]
    assert len(table) == 4 and "| t=0 | t=1-998 | t=999 | total |" in text
    for line in table:
        cells = [float(v) for v in line.strip("|").split("|")[1:]]
        assert cells[:2] == [0.0, 0.0] and cells[2] == pytest.approx(-0.5 if agree else 0.5, abs=1e-9)
        assert cells[3] == pytest.approx(sum(cells[:3]))


def test_iddpm_steps_lines_compare_the_loss_at_fewer_steps_per_seed():
    """L_simple loses 2.0 FID at 50 steps and 1.0 at 100, L_hybrid 0.5 and 0.25 (linear): the
    finding holds; on cosine neither loses: unresolved; a grid without the study says nothing."""
    iddpm = parse(experiment_params("iddpm"))
    loses = {("lin", "simple"): {50: 2.0, 100: 1.0}, ("lin", "hybrid"): {50: 0.5, 100: 0.25},
             ("cos", "simple"): {50: 0.0, 100: 0.0}, ("cos", "hybrid"): {50: 0.0, 100: 0.0}}
    rows = []
    for i, cell in enumerate(iddpm.sampler_study.cells):
        schedule, row = cell.split("-")[:2]
        for nfe in (50, 100, 250):
            value = 3.0 + loses[schedule, row].get(nfe, 0.0) + 0.1 * (i % 3) + 0.01 * (nfe == 50) * (i % 2)
            rows.append({"cell": cell, "sampler": "ancestral", "nfe_budget": nfe, "status": "ok",
                         "metric": "fid", "value": value})
    text = "\n".join(papers.iddpm_steps_lines(iddpm, pd.DataFrame(rows)))
    lines = [l for l in text.splitlines() if l.startswith("- ")]
    assert len(lines) == 4, text
    linear50 = next(l for l in lines if "at 50 than at 250 ancestral steps (linear)" in l)
    assert "lin-simple +2.00" in linear50 and "lin-hybrid +0.50" in linear50 and linear50.endswith("holds")
    assert next(l for l in lines if "(cosine)" in l).endswith("unresolved")
    empty = pd.DataFrame(rows).assign(status="diverged")
    assert papers.iddpm_steps_lines(iddpm, empty) == []


def test_ddpm_compute_lines_follow_an_ordering_across_snapshots():
    """ddpm_compute: mu-vlb (the paper's better row, 13.22 < 13.51) worse than eps-vlb early and
    better late: the per-step verdicts go from reversed to holds; the NLL column shows each
    snapshot's; a grid without snapshots prints nothing."""
    grid = parse(experiment_params("ddpm_compute"))
    steps = range(4000, 40001, 4000)
    results = {}
    for i, cell in enumerate(grid.cells):
        mu = cell.startswith("mu")
        fid = [3.0 + (2.0 * (20000 - s) / 20000 if mu else 0.0) + 0.01 * i for s in steps]
        results[cell] = {"status": "ok", "fid": fid[-1], "fid_boot": [fid[-1]] * 10,
                         "fid_by_step": [{"step": s, "fid": f, "nll_bpd": 4.0 + 0.1 * mu} for s, f in zip(steps, fid)]}
    text = "\n".join(papers.ddpm_compute_lines(grid, results, DDPM))
    header = ("| step | eps-eps FID | eps-vlb FID | mu-vlb FID | eps-vlb - eps-eps | mu-vlb - eps-eps | eps-vlb - mu-vlb "
              "| eps-eps NLL | eps-vlb NLL | mu-vlb NLL |")
    assert header in text, text
    column = {name.strip(): i for i, name in enumerate(header.split("|"))}
    rows = {int(l.split("|")[1]): l.split("|") for l in text.splitlines()
            if l.startswith("| ") and l.split("|")[1].strip().isdigit()}
    assert sorted(rows) == list(steps)
    mu_vs_eps = column["eps-vlb - mu-vlb"]
    assert rows[4000][mu_vs_eps].strip().endswith("reversed") and rows[40000][mu_vs_eps].strip().endswith("holds")
    assert rows[20000][mu_vs_eps].strip().endswith("unresolved")  # equal means
    assert rows[8000][column["mu-vlb NLL"]].strip() == "4.100"
    for r in results.values():
        del r["fid_by_step"]
    assert papers.ddpm_compute_lines(grid, results, DDPM) == []


def test_ddpm_settings_lines_give_each_ordering_under_each_training_setting():
    """ddpm_mu_optim: mu-vlb worse than eps-vlb with the default's lr and better with DDPM's
    2e-4: the setting rows say reversed, then holds, each with both rows' FID and NLL; a grid
    without train overrides (the default's) prints nothing."""
    grid = parse(experiment_params("ddpm_mu_optim"))
    rng = np.random.default_rng(0)
    results = {}
    for cell_id, cell in grid.cells.items():
        train = grid.cell_train(cell_id)
        fid = 10.0 + (5.0 if cell.parameterization == "mu" else 0.0) * (1 if train.lr == 1e-3 else -1) + 0.1 * rng.random()
        results[cell_id] = {"status": "ok", "fid": fid, "fid_boot": list(fid + rng.normal(0, 0.01, 50)),
                            "nll_bpd": 4.0 + (cell.parameterization == "mu")}
    lines = papers.ddpm_settings_lines(grid, results, DDPM)
    text = "\n".join(lines)
    assert ("| grad_clip | lr | mu-vlb FID | eps-vlb FID | eps-vlb - mu-vlb | mu-vlb NLL | eps-vlb NLL |") in text, text
    rows = {tuple(c.strip() for c in l.split("|")[1:3]): [c.strip() for c in l.split("|")[1:-1]]
            for l in lines if l.startswith("| ") and l.split("|")[1].strip()[0].isdigit()}
    assert sorted(rows) == [("0", "0.0002"), ("0", "0.001"), ("1", "0.0002"), ("1", "0.001")]
    for (clip, lr), row in rows.items():
        assert row[4].endswith("reversed" if lr == "0.001" else "holds"), row
        assert row[5] == "5.000 (n = 3)" and row[6] == "4.000 (n = 3)"
    assert papers.ddpm_settings_lines(load(ROOT / "params.yaml"), results, DDPM) == []
