"""Sampler nodes: pick a sampler by name, a step schedule, and run the flow-matching ODE with CFG."""
from __future__ import annotations

from . import common as C


class KlingFoleySamplerSelect:
    DESCRIPTION = "Chooses the ODE sampler from the registry (Euler is the papers' default)."
    CATEGORY = C.CATEGORY + "/sampling"
    RETURN_TYPES = (C.SAMPLER,)
    RETURN_NAMES = ("sampler",)
    FUNCTION = "select"

    @classmethod
    def INPUT_TYPES(cls):
        from kling_foley_core.sampling import SAMPLERS

        return {"required": {"sampler_name": (sorted(SAMPLERS), {
            "default": "euler", "tooltip": "euler (1 eval/step), heun/midpoint (2), rk4 (4), dpm_multistep (1, "
                                           "2nd order), adaptive (error-controlled, ignores steps)."})}}

    def select(self, sampler_name):
        from kling_foley_core.sampling import get_sampler

        get_sampler(sampler_name)  # unknown names list the available ones
        return (sampler_name,)


class KlingFoleySchedule:
    DESCRIPTION = "The time grid from noise (t=0) to data (t=1): number of steps and spacing."
    CATEGORY = C.CATEGORY + "/sampling"
    RETURN_TYPES = (C.SCHEDULE,)
    RETURN_NAMES = ("schedule",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        from kling_foley_core.sampling import SCHEDULES

        return {"required": {
            "steps": ("INT", {"default": 25, "min": 1, "max": 1000, "tooltip": "Number of steps (papers: 25)."}),
            "schedule": (sorted(SCHEDULES), {"default": "uniform",
                                             "tooltip": "uniform (papers), shifted (more steps near noise), cosine."}),
            "shift": ("FLOAT", {"default": 3.0, "min": 0.1, "max": 20.0, "step": 0.1,
                                "tooltip": "Strength of the 'shifted' schedule (1 = uniform)."}),
        }}

    def make(self, steps, schedule="uniform", shift=3.0):
        from kling_foley_core.sampling import make_schedule

        make_schedule(schedule, steps, shift)  # validate now, not at sampling time
        return ({"steps": int(steps), "schedule": schedule, "shift": float(shift)},)


class KlingFoleySampler:
    DESCRIPTION = ("Generates audio latents by flow matching with classifier-free guidance "
                   "(cfg·v(cond) + (1−cfg)·v(uncond), batched in one forward). Any length: a clip longer than the "
                   "model's trained length is generated in overlapping windows, each continuing the previous one "
                   "(Foley extension) and joined in latent space. Interruptible between steps.")
    CATEGORY = C.CATEGORY + "/sampling"
    RETURN_TYPES = (C.LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (C.MODEL, {"tooltip": "From Kling-Foley Model Loader."}),
            "conditioning": (C.CONDITIONING, {"tooltip": "From Kling-Foley Conditioning."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Noise seed: the same seed and inputs give the same audio."}),
            "cfg": ("FLOAT", {"default": 4.5, "min": 0.0, "max": 30.0, "step": 0.1,
                              "tooltip": "Guidance strength (papers: 4.5). ≤ 1 turns guidance off."}),
        }, "optional": {
            "sampler": (C.SAMPLER, {"tooltip": "From Kling-Foley Sampler Select (default: euler)."}),
            "schedule": (C.SCHEDULE, {"tooltip": "From Kling-Foley Schedule (default: 25 uniform steps)."}),
            "context": ("KLING_FOLEY_AUDIO_CONTEXT", {"tooltip": (
                "Known audio from Kling-Foley Audio Context: continue a track, edit a window, or copy a reference's "
                "timbre. Models trained with the context pathway take it as input; others (MMAudio, "
                "HunyuanVideo-Foley) use the training-free path.")}),
            "window_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 60.0, "step": 0.1, "tooltip": (
                "Clips longer than this are generated in windows joined by Foley extension (0 = the model's "
                "trained length: foley-tiny and MMAudio 8 s, Kling-Foley 10 s, HunyuanVideo-Foley 8 s).")}),
            "overlap_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": (
                "Seconds of the previous window each window continues from (0 = 2 s; at least 0.64 s, at most "
                "half a window).")}),
            "guidance": (["all", "text", "reference"], {"default": "all", "tooltip": (
                "What guidance pushes away from: 'all' conditions (the papers), only the 'text' (video timing, "
                "sync and known audio stay in both branches), so cfg strengthens the prompt's own effect: "
                "text-controlled timbre (TC-VTA) and edits by text; or only the 'reference': the context "
                "pathway's summary of the known audio, so cfg strengthens a reference's timbre (AC-VTA; models "
                "trained with that summary). MM-DiT models only.")}),
            "guidance_rescale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": (
                "CFG rescale (as diffusers' guidance_rescale): pulls the guided prediction's spread back towards "
                "the conditional one's, against over-saturation (hits louder, tails longer than real). 0 = plain "
                "CFG.")}),
            "apg_eta": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": (
                "Adaptive projected guidance (as ComfyUI's APG node's eta): the share of guidance's push along the "
                "sound already there. 1 = plain CFG (the papers); 0 = guidance sharpens what and when without "
                "making every hit louder (foley-tiny's tuned value: hits closer to the recordings' level and "
                "decay).")}),
        }}

    def sample(self, model, conditioning, seed, cfg, sampler=None, schedule=None, context=None, window_seconds=0.0,
               overlap_seconds=0.0, guidance="all", guidance_rescale=0.0, apg_eta=1.0):
        import dataclasses
        import logging

        from kling_foley_core.generation import GenerationError, SamplerSettings, context_path, provenance
        from kling_foley_core.longform import generate_long_latents, plan_for
        from kling_foley_core.runner.progress import ProgressBar
        from kling_foley_core.sampling.context import ContextError

        schedule = schedule or {"steps": 25, "schedule": "uniform", "shift": 1.0}
        settings = SamplerSettings(sampler=sampler or "euler", cfg=float(cfg), guidance=guidance,
                                   guidance_rescale=float(guidance_rescale), apg_eta=float(apg_eta), **schedule)
        window, overlap = float(window_seconds) or None, float(overlap_seconds) or None
        try:
            windows = len(plan_for(model, conditioning.duration, window, overlap))
        except GenerationError as e:
            raise C.node_error("Kling-Foley Sampler", str(e)) from None
        total = (settings.steps if settings.sampler != "adaptive" else 1) * windows
        if context is not None:
            conditioning = dataclasses.replace(conditioning, context=context)
            total *= 2 if context.invert else 1
            logging.getLogger("kling_foley").info("Kling-Foley Sampler: %s context, %s path", context.mode,
                                                  context_path(model))
        done = [0]

        def progress(d):  # an edit runs the inversion first, then the sampling: one bar over both
            done[0] += 1
            bar.update_absolute(min(done[0], total), total)

        try:  # one bar over every window's steps (interruptible at each step)
            with ProgressBar(total, desc="Kling-Foley sampling" + (f" ({windows} windows)" if windows > 1 else "")) \
                    as bar:
                out = generate_long_latents(model, conditioning, settings, seed=seed, window=window, overlap=overlap,
                                            callback=progress)
        except (ContextError, GenerationError) as e:
            raise C.node_error("Kling-Foley Sampler", str(e)) from None
        return ({"latents": out.latents, "duration": conditioning.duration,
                 "clip_features": conditioning.clip_f, "sync_features": conditioning.sync_f,
                 "context_path": out.context_path, "windows": out.plan.joins,
                 "provenance": provenance(model, settings, seed)},)  # written into the saved file's tags


NODES = [KlingFoleySamplerSelect, KlingFoleySchedule, KlingFoleySampler]
