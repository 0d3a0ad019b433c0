"""ComfyUI V1 node classes for Kling-Foley. No ComfyUI module is imported at import time.

Node ids are prefixed ``KlingFoley`` and never renamed; new widgets are appended as optional inputs.
"""
from . import audio, context, default_model, encode, hunyuan, loaders, preview, sampling, video

_DISPLAY = {
    "KlingFoleyLoadVideo": "Kling-Foley Load Video",
    "KlingFoleyVideoFromImages": "Kling-Foley Video From Images",
    "KlingFoleyVideoFromVIDEO": "Kling-Foley Video From VIDEO",
    "KlingFoleyModelLoader": "Kling-Foley Model Loader (MM-DiT)",
    "KlingFoleyVAELoader": "Kling-Foley VAE Loader",
    "KlingFoleyVocoderLoader": "Kling-Foley Vocoder Loader",
    "KlingFoleyMono2StereoLoader": "Kling-Foley Mono2Stereo Loader",
    "KlingFoleyVisualEncoderLoader": "Kling-Foley Visual Encoder Loader",
    "KlingFoleySyncEncoderLoader": "Kling-Foley Sync Encoder Loader",
    "KlingFoleyTextEncoderLoader": "Kling-Foley Text Encoder Loader",
    "KlingFoleyVisualEncode": "Kling-Foley Visual Encode",
    "KlingFoleySyncEncode": "Kling-Foley Sync Encode",
    "KlingFoleyTextEncode": "Kling-Foley Text Encode",
    "KlingFoleyConditioning": "Kling-Foley Conditioning",
    "KlingFoleySamplerSelect": "Kling-Foley Sampler Select",
    "KlingFoleySchedule": "Kling-Foley Schedule",
    "KlingFoleySampler": "Kling-Foley Sampler",
    "KlingFoleyVAEDecode": "Kling-Foley VAE Decode",
    "KlingFoleyMono2Stereo": "Kling-Foley Mono2Stereo",
    "KlingFoleyAudioMono2Stereo": "Kling-Foley Audio Mono2Stereo",
    "KlingFoleyVocode": "Kling-Foley Vocode",
    "KlingFoleySaveAudio": "Kling-Foley Save Audio",
    "KlingFoleyMuxVideo": "Kling-Foley Mux Video",
    "KlingFoleySyncPreview": "Kling-Foley Sync Preview",
    "KlingFoleyHunyuanLoader": "Kling-Foley HunyuanVideo-Foley Loader",
    "KlingFoleyHunyuanDecode": "Kling-Foley HunyuanVideo-Foley Decode",
    "KlingFoleyDefaultModelLoader": "Kling-Foley Default Model Loader (foley-tiny)",
    "KlingFoleyLoadAudio": "Kling-Foley Load Audio",
    "KlingFoleyVAEEncode": "Kling-Foley VAE Encode",
    "KlingFoleyAudioContext": "Kling-Foley Audio Context",
    "KlingFoleyEditJoin": "Kling-Foley Edit Join",
}

NODE_CLASS_MAPPINGS = {cls.__name__: cls for mod in (video, default_model, loaders, encode, sampling, audio, context, preview, hunyuan)
                       for cls in mod.NODES}
NODE_DISPLAY_NAME_MAPPINGS = {k: _DISPLAY.get(k, k) for k in NODE_CLASS_MAPPINGS}
