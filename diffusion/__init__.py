"""Diffusion objectives, parameterizations and samplers in pure torch (see design.md).

The pieces: `process` (forward processes), `parameterizations` (what the network
predicts), `weightings` (w(t) on the eps-MSE), `denoiser` (network + parameterization +
reverse variance), `losses` (training objectives and VLB terms), `timesteps` (t sampling),
`samplers`, `likelihood` (NLL in bits/dim), `training` (EMA, warm-up, one step) and `nets`.

Where each seed formula lives (../shared/seeds):
    000  x_t = alpha x0 + sigma eps                 process.DiscreteProcess.q_sample
         score target -eps/sigma, its loss          parameterizations.Score, weightings "native"
         reverse-time SDE with the learned score    samplers.euler_maruyama
    001  mu_tilde(x_t, x0), eq. 1                   process.DiscreteProcess.posterior_mean
         mean / data-point / noise prediction       parameterizations.Mu, X0, Eps
         mu from eps, eq. 2                         Eps.to_x0_eps + posterior_mean (same value)
         Table 2 loss choices (mu-MSE, VLB, L_simple) weightings "native", "vlb", "eps"
         Algorithm 2 (ancestral sampling)           samplers.ancestral
         Langevin dynamics, sec. 2.5                samplers.langevin
    002  x = x0 + sigma eps, geometric sigmas       process.ve_process
         DSM loss with lambda(sigma)                losses.Objective on the score parameterization
                                                    with weightings "lambda_sigma2", "lambda_one",
                                                    "lambda_inv_sigma2", "lambda_learned"
         Tweedie: E[x0 | x] = x + sigma^2 score     samplers._denoise_ve / euler_maruyama
         annealed Langevin sampling                 samplers.langevin
         (seed 002's table says lambda = 1 emphasizes large noise; in eps-space it is
         w = 1/sigma^2, which emphasizes SMALL noise.)
    003  VLB decomposition L_T + L_{t-1} + L_0      losses.vlb_term, likelihood.vlb_bits_per_dim,
                                                    process.prior_kl
         KL between Gaussians                       losses.normal_kl
         L_simple and the weighting table           weightings (eps, vlb, snr, min_snr)
         prediction targets eps / x0 / v            parameterizations
         importance sampling of t                   timesteps.ImportanceSampler
         (seed 003 says L_simple up-weights small t; against the VLB it DOWN-weights them,
         Ho et al. 2020 sec. 3.4.)
    004  Gaussian NLL with mu_theta, sigma_phi       weighting "uncertainty" (losses.Objective)
         score -(x - mu_theta)/sigma_phi^2          Denoiser(..., uncertainty=True, score="uncertainty")
         (its open TODO, EDM preconditioning)       parameterization and weighting "edm"
"""

from .denoiser import LEARNED_SIGMAS, SCORES, SIGMAS, Denoiser
from .likelihood import vlb_bits_per_dim
from .losses import Objective, output_channels
from .parameterizations import PARAMETERIZATIONS, get_parameterization
from .process import PROCESSES, SCHEDULES, DiscreteProcess, ve_process, vp_process
from .samplers import SAMPLERS
from .timesteps import TIMESTEP_SAMPLERS, TimestepOptions, timestep_sampler
from .training import EMA, training_step, warmup_lr
from .weightings import WEIGHTINGS, weight_table

__version__ = "0.1.0"
