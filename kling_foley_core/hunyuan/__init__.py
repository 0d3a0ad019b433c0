"""HunyuanVideo-Foley family: the TV2A diffusion transformer, the 48 kHz DAC-VAE, loaders, fp8 and block swap."""
from .dac_vae import DacVae, DiagonalGaussian
from .dit import PRESETS, HunyuanConfigError, HunyuanFoleyConditions, HunyuanFoleyDiT
from .loading import (WrongFamilyError, dit_config_from_state_dict, dit_size_name, load_dac_vae, load_hunyuan_dit,
                      sniff_checkpoint)
from .offload import BlockSwap, enable_block_swap
from .quant import Fp8UnavailableError, convert_to_fp8, fp8_state_dict, quantize_fp8

__all__ = [
    "BlockSwap", "DacVae", "DiagonalGaussian", "Fp8UnavailableError", "HunyuanConfigError", "HunyuanFoleyConditions",
    "HunyuanFoleyDiT", "PRESETS", "WrongFamilyError", "convert_to_fp8", "dit_config_from_state_dict", "dit_size_name",
    "enable_block_swap", "fp8_state_dict", "load_dac_vae", "load_hunyuan_dit", "quantize_fp8", "sniff_checkpoint",
]
