"""A cell's `process:` overrides (the noise schedule, the decoder's CDF): one grid can train
linear and cosine cells side by side (Improved DDPM's comparison), and every stage that builds
the cell's process (training, the denoiser that samples and scores it, the NLL, the
fingerprint) uses the cell's, never the experiment's."""

import json

import pytest
import torch
import yaml

from diffusion import vp_process
from pipeline import provenance
from pipeline.build import load_denoiser
from pipeline.params import ParamsError, parse


@pytest.fixture
def raw(tiny_params):
    raw = yaml.safe_load(tiny_params.read_text())
    raw["train"].update(steps=20, checkpoint_every=20, log_every=10)
    raw["cells"] = {
        "eps-eps": {"parameterization": "eps", "weighting": "eps"},
        "eps-eps-cosine": {"parameterization": "eps", "weighting": "eps", "process": {"schedule": "cosine"}},
        "eps-eps-cosine-s1": {"parameterization": "eps", "weighting": "eps", "process": {"schedule": "cosine"},
                              "train": {"seed": 1}},
    }
    raw["stats"]["baseline"] = "eps-eps"
    raw["sampler_study"]["cells"] = ["eps-eps"]
    return raw


def test_the_cells_process_is_the_experiments_with_its_overrides(raw):
    params = parse(raw)
    assert params.process.schedule == "linear"
    assert params.cell_process("eps-eps") == params.process
    cosine = params.cell_process("eps-eps-cosine")
    assert cosine.schedule == "cosine" and (cosine.kind, cosine.T) == (params.process.kind, params.process.T)
    # a schedule is a row of its own; its seeds are one row
    assert params.replicate_groups() == {"eps-eps": ["eps-eps"],
                                         "eps-eps-cosine": ["eps-eps-cosine", "eps-eps-cosine-s1"]}


@pytest.mark.parametrize("override, line", [
    ({"schedule": "quadratic"}, "cells.eps-eps-cosine.process.schedule: unknown value 'quadratic'"),
    ({"decoder_cdf": "logistic"}, "cells.eps-eps-cosine.process.decoder_cdf: unknown value 'logistic'"),
    ({"T": 10}, "cells.eps-eps-cosine.process.T"),  # kind, T and the VE range are the experiment's
    ({"schedule": 1}, "cells.eps-eps-cosine.process.schedule"),
])
def test_a_bad_process_override_is_one_line_naming_its_key(raw, override, line):
    raw["cells"]["eps-eps-cosine"]["process"] = override
    with pytest.raises(ParamsError) as err:
        parse(raw)
    assert any(entry.startswith(line) for entry in err.value.lines), err.value.lines


def test_training_sampling_and_fingerprint_use_the_cells_schedule(raw, tmp_path):
    from pipeline.data import load_dataset
    from pipeline.train import train_cell

    params = parse(raw)
    images, labels, levels = load_dataset("digits", None)
    data = {"images": images[:300], "labels": labels[:300], "levels": levels}
    states = {c: train_cell(params, c, data, tmp_path / f"{c}.ck.pt", progress=False)[0]
              for c in ("eps-eps", "eps-eps-cosine")}
    T = params.process.T
    for cell_id, schedule in (("eps-eps", "linear"), ("eps-eps-cosine", "cosine")):
        state = states[cell_id]
        assert json.loads(state["config"])["process"]["schedule"] == schedule
        denoiser = load_denoiser(params, state, tuple(images.shape[1:]))
        torch.testing.assert_close(denoiser.process.alpha_bar, vp_process(schedule, T).alpha_bar, rtol=0, atol=0)
    assert states["eps-eps"]["fingerprint"]["settings"]["process"]["schedule"] == "linear"
    assert states["eps-eps-cosine"]["fingerprint"]["settings"]["process"]["schedule"] == "cosine"
    record = provenance.model_record(params, "eps-eps-cosine", provenance.data_inputs(data))
    assert record == states["eps-eps-cosine"]["fingerprint"]

