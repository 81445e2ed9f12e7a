"""Diffusion objectives, parameterizations and samplers in pure torch (see design.md).

The pieces: `process` (forward processes), `parameterizations` (what the network
predicts), `weightings` (w(t) on the eps-MSE), `denoiser` (network + parameterization +
reverse variance), `losses` (training objectives and VLB terms), `timesteps` (t sampling),
`samplers`, `likelihood` (NLL in bits/dim), `training` (EMA, warm-up, one step) and `nets`.
"""

from .denoiser import LEARNED_SIGMAS, SIGMAS, Denoiser
from .likelihood import vlb_bits_per_dim
from .losses import Objective, output_channels
from .parameterizations import PARAMETERIZATIONS, get_parameterization
from .process import PROCESSES, SCHEDULES, DiscreteProcess, ve_process, vp_process
from .samplers import SAMPLERS
from .timesteps import TIMESTEP_SAMPLERS
from .training import EMA, training_step, warmup_lr
from .weightings import WEIGHTINGS, weight_table

__version__ = "0.1.0"
