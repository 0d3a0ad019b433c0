"""Flow matching: training objective, step schedules, CFG denoiser and a registry of ODE samplers."""
from .flow_matching import FlowMatchingBatch, flow_matching_loss, interpolate, logit_normal_t, make_batch, target_velocity
from .guidance import CFGDenoiser
from .samplers import SAMPLERS, SamplingError, get_sampler, register_sampler, sample
from .schedules import SCHEDULES, make_schedule, register_schedule

__all__ = [
    "CFGDenoiser", "FlowMatchingBatch", "SAMPLERS", "SCHEDULES", "SamplingError", "flow_matching_loss",
    "get_sampler", "interpolate", "logit_normal_t", "make_batch", "make_schedule", "register_sampler",
    "register_schedule", "sample", "target_velocity",
]
