"""HunyuanVideo-Foley nodes: its DiT and DAC-VAE plug into the same encoders, sampler and mux nodes."""
from __future__ import annotations

from . import common as C
from . import memory as M
from .common import TINY, node_error

HUNYUAN_VAE = "KLING_FOLEY_HUNYUAN_VAE"


class KlingFoleyHunyuanLoader:
    DESCRIPTION = ("Loads HunyuanVideo-Foley (hunyuanvideo_foley.pth = XXL, hunyuanvideo_foley_xl.pth = XL, or fp16/"
                   "fp8 safetensors) and its DAC-VAE (vae_128d_48k.pth). fp8 stores weights in 8 bits and upcasts "
                   "per layer; block swap keeps blocks on the CPU and streams them to the GPU per step.")
    CATEGORY = C.CATEGORY + "/loaders"
    RETURN_TYPES = (C.MODEL, HUNYUAN_VAE)
    RETURN_NAMES = ("model", "vae")
    FUNCTION = "load"

    @classmethod
    def VALIDATE_INPUTS(cls, dit):
        # dit only: ComfyUI files a VALIDATE_INPUTS answer under every input it takes, so a missing DiT would be
        # reported for 'vae' too. 'vae' keeps the list check (a missing file is named for 'vae' alone) and load().
        return C.check_model("hunyuan", dit, (TINY,))

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit": (C.model_choices("hunyuan", [TINY]), {
                "tooltip": "The DiT checkpoint in models/kling_foley/hunyuan/."}),
            "vae": (C.model_choices("hunyuan", [TINY]), {
                "tooltip": "The DAC-VAE checkpoint (vae_128d_48k.pth) in models/kling_foley/hunyuan/."}),
            "precision": (["bf16", "fp16", "fp32", "fp8"], {
                "default": "bf16", "tooltip": "fp8: 8-bit weights, about half of bf16's memory (CPU runs fp32)."}),
        }, "optional": {
            "blocks_to_swap": ("INT", {"default": 0, "min": 0, "max": 64,
                                       "tooltip": "Blocks kept on the CPU and moved to the GPU only while they run "
                                                  "(0 = all resident). Lets XXL fit small GPUs."}),
            "memory": M.memory_input(),
        }}

    def load(self, dit, vae, precision="bf16", blocks_to_swap=0, memory=M.KEEP):
        from kling_foley_core.hunyuan.dac_vae import DacVae
        from kling_foley_core.hunyuan.dit import HunyuanFoleyDiT
        from kling_foley_core.hunyuan.loading import load_dac_vae, load_hunyuan_dit
        from kling_foley_core.hunyuan.offload import enable_block_swap
        from kling_foley_core.runner.paths import find_model

        device, _ = C.device_and_dtype("fp32")
        if device.type == "cpu" and precision in ("bf16", "fp16"):
            precision = "fp32"
        if dit == TINY:
            # sized to the tiny encoders (32-d visual, sync and text features)
            model = HunyuanFoleyDiT.from_preset("tiny", clip_dim=32, sync_feat_dim=32, condition_dim=32).eval()
        else:
            model = load_hunyuan_dit(find_model("hunyuan", dit), precision=precision, device="cpu")
        if vae == TINY:
            codec = DacVae(**tiny_dac_config()).eval()
        else:
            try:
                vae_path = find_model("hunyuan", vae)
            except ValueError as e:
                raise node_error("Kling-Foley HunyuanVideo-Foley Loader", f"vae: {e}") from None
            codec = load_dac_vae(vae_path, device=device)
        if blocks_to_swap:  # the blocks stream themselves; the rest of the DiT stays on the device
            enable_block_swap(model, blocks_to_swap, device)
        else:
            model = M.place(model.eval(), memory, device)
        return (model.eval(), M.place(codec.eval(), memory, device))


def tiny_dac_config() -> dict:
    """A toy DAC-VAE whose latent size matches the tiny DiT (random weights, for trying the graph)."""
    from kling_foley_core.hunyuan.dit import HunyuanFoleyDiT

    latent = HunyuanFoleyDiT.from_preset("tiny").latent_channels
    # hop 960 = 48000 / 50: the DiT's 50 Hz latent rate
    return dict(encoder_dim=8, encoder_rates=[2, 4, 6, 20], latent_dim=latent, decoder_dim=32,
                decoder_rates=[20, 6, 4, 2], sample_rate=48000)


class KlingFoleyHunyuanDecode:
    DESCRIPTION = ("Decodes HunyuanVideo-Foley latents with the DAC-VAE into 48 kHz audio, trimmed to the duration, "
                   "with an inaudible provenance watermark (on by default; 'kling-foley detect FILE' finds it).")
    CATEGORY = C.CATEGORY + "/audio"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (HUNYUAN_VAE, {"tooltip": "From Kling-Foley HunyuanVideo-Foley Loader."}),
            "latent": (C.LATENT, {"tooltip": "From Kling-Foley Sampler driven by the HunyuanVideo-Foley model."}),
        }, "optional": {"watermark": C.watermark_input()}}

    def decode(self, vae, latent, watermark=True):
        import torch

        from kling_foley_core.generation import finish_waveform

        z = latent["latents"]
        if z.ndim != 3 or z.shape[1] != vae.config.latent_dim:
            raise node_error("Kling-Foley HunyuanVideo-Foley Decode", f"latents {tuple(z.shape)} do not fit this "
                             f"DAC-VAE ({vae.config.latent_dim} channels); sample with the HunyuanVideo-Foley model")
        with torch.inference_mode():
            wave = vae.decode(z.to(next(vae.parameters()).device)).float().cpu()  # (B, 1, T)
        sr = int(vae.config.sample_rate)
        n = int(latent["duration"] * sr)
        wave = torch.nn.functional.pad(wave, (0, max(0, n - wave.shape[-1])))[..., :n]
        return (C.generated_audio(finish_waveform(wave, sr, watermark=bool(watermark)), sr, latent, bool(watermark)),)


NODES = [KlingFoleyHunyuanLoader, KlingFoleyHunyuanDecode]
