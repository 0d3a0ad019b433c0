"""Kling-Foley core: video-to-audio models, samplers and I/O. Imports nothing from ComfyUI."""

__version__ = "0.1.0"
