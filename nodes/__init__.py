"""ComfyUI V1 node classes for Kling-Foley. No ComfyUI module is imported at import time."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
