"""ComfyUI entry point: exports the node mappings of the Kling-Foley pack."""
import os
import sys

try:  # installed with pip (or already importable): use that copy
    import kling_foley_core  # noqa: F401
except ImportError:  # loaded from custom_nodes/ without an install: make the core importable
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

if __package__:  # ComfyUI (and any package import) loads the pack as a package
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
else:  # loaded as a plain module, e.g. by pytest from a checkout folder whose name is no Python name (a-b)
    from kling_foley_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
