"""Stage `sampler_table`: the sampler study's points into one long CSV, a Markdown table
(one row per cell and sampler, one column per NFE) and a seaborn line plot of FID and KID
(sliced Wasserstein and MMD^2 for 2-D points) against the number of network evaluations,
with the held-out real data as the floor; on an Improved DDPM grid, its fewer-steps finding
(papers.iddpm_steps_lines)."""

import argparse

import matplotlib

matplotlib.use("Agg")
import seaborn as sns  # noqa: E402

from . import provenance  # noqa: E402
from .io import load_json, load_torch, run_stage, save_text  # noqa: E402
from .params import load_or_exit  # noqa: E402
from .report import papers  # noqa: E402
from .report.study import collect, line_plot, to_markdown  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--study-dir", required=True, help="folder of the sampler_study points")
    parser.add_argument("--reference", required=True, help="the reference stage's JSON (the floor)")
    parser.add_argument("--train", required=True, help="training split (.pt): its tensors are checked")
    parser.add_argument("--heldout", required=True, help="held-out split (.pt)")
    parser.add_argument("--evaluator", required=True, help="the evaluator's weights (.pt)")
    parser.add_argument("--evaluator-metrics", required=True, help="the evaluator stage's JSON")
    parser.add_argument("--csv", required=True, help="output: long-format table (.csv)")
    parser.add_argument("--markdown", required=True, help="output: table (.md)")
    parser.add_argument("--plot", required=True, help="output: line plot (.png)")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    sns.set_theme(style="whitegrid", context="notebook")
    long, metrics, found = collect(params, args.study_dir)
    reference = load_json(args.reference)
    shared, items = provenance.expected_shared(params, load_torch(args.train), load_torch(args.heldout),
                                               args.evaluator, load_json(args.evaluator_metrics), reference)
    provenance.check(items + [(f"sampler_study {c} {s}-{n}", record, provenance.expected_study(params, c, s, n, *shared))
                              for (c, s, n), record in found.items()])
    heldout = reference["rows"]["heldout"]
    floors = {m: heldout.get(m) for m in metrics}
    s = params.sampler_study
    parts = [f"Sampler study: {s.num_samples} samples per point (seed {s.seed}, the same noise for every "
             f"sampler) against the training set; columns are the NFE budgets (the JSONs record the "
             f"evaluations actually made: Heun spends 2 per step but the last, Langevin "
             f"{params.sample.langevin_steps_per_level} per level plus a final denoising step)."]
    for metric in metrics[:2]:
        parts += ["", f"### {metric}", "", to_markdown(long, metric, params, floors[metric])]
    if papers.iddpm_applies(params):
        parts += papers.iddpm_steps_lines(params, long)
    markdown = "\n".join(parts) + "\n"
    save_text(long.to_csv(index=False), args.csv)
    save_text(markdown, args.markdown)
    line_plot(long, metrics, floors, args.plot)
    print(markdown)


if __name__ == "__main__":
    run_stage(main)
