"""What the runner needs to know about a ComfyUI V1 node class, read from its class attributes.

A V1 node declares ``INPUT_TYPES() -> {"required": {...}, "optional": {...}, "hidden": {...}}`` where each
input is ``(TYPE,)`` or ``(TYPE, {options})``. ``TYPE`` is a string (``"INT"``, ``"KLING_FOLEY_MODEL"``, a
comma-separated union, ``"*"``) or a list of choices (a COMBO). Newer nodes also write ``("COMBO",
{"options": [...]})``. This module turns that into ``InputSpec`` records in declaration order, which is the
order the ComfyUI frontend creates widgets in and therefore the order of a UI workflow's ``widgets_values``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Types the frontend draws as widgets (values live in widgets_values); anything else is a socket only.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# The frontend's value-control widget choices ("control_after_generate").
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
SEED_NAMES = ("seed", "noise_seed")
_UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "upload")


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str  # "COMBO" for choice lists
    options: dict = field(default_factory=dict)
    category: str = "required"  # required | optional | hidden
    choices: tuple | None = None  # COMBO choices

    @property
    def is_widget(self) -> bool:
        """True when the frontend stores this input's value in ``widgets_values``."""
        if self.category == "hidden" or self.type not in WIDGET_TYPES:
            return False
        return not self.options.get("forceInput", False)

    @property
    def control_widgets(self) -> int:
        """How many extra, frontend-only widget values follow this widget in ``widgets_values``.

        INT: one ``control_after_generate`` value when the option asks for it, or, when the option is absent, for
        inputs named ``seed``/``noise_seed`` (the frontend's ``useIntWidget``). COMBO: only when asked, and then
        two (the control value and its filter-list string, ``addValueControlWidgets``).
        """
        cag = self.options.get("control_after_generate")
        if self.type == "INT":
            if cag is None:
                return 1 if self.name in SEED_NAMES else 0
            return 1 if cag else 0
        if self.type == "COMBO" and cag:
            return 2
        return 0

    @property
    def has_upload_widget(self) -> bool:
        """COMBOs with an upload button get one more serialized widget value ("image", "video", ...).

        A STRING that declares an upload option is a path input that the node shows as such a COMBO inside
        ComfyUI (e.g. Load Video, whose headless input takes any path): a save made in ComfyUI holds that value.
        """
        return self.type in ("COMBO", "STRING") and any(self.options.get(k) for k in _UPLOAD_OPTIONS)


def _parse_one(name: str, decl: Any, category: str) -> InputSpec:
    if isinstance(decl, (list, tuple)) and len(decl) > 0 and not isinstance(decl, str):
        raw_type = decl[0]
        options = decl[1] if len(decl) > 1 and isinstance(decl[1], dict) else {}
    else:  # tolerate a bare type string
        raw_type, options = decl, {}
    if isinstance(raw_type, (list, tuple)):
        return InputSpec(name, "COMBO", dict(options), category, tuple(raw_type))
    if raw_type == "COMBO":
        choices = options.get("options")
        return InputSpec(name, "COMBO", dict(options), category, tuple(choices) if choices is not None else None)
    return InputSpec(name, str(raw_type), dict(options), category, None)


def input_specs(cls) -> list[InputSpec]:
    """All inputs of ``cls`` in declaration order: required, then optional, then hidden."""
    declared = cls.INPUT_TYPES()
    if not isinstance(declared, dict):
        raise TypeError(f"{cls.__name__}.INPUT_TYPES() must return a dict, got {type(declared).__name__}")
    specs = []
    for category in ("required", "optional", "hidden"):
        for name, decl in (declared.get(category) or {}).items():
            if category == "hidden":
                specs.append(InputSpec(name, str(decl if not isinstance(decl, (list, tuple)) else decl[0]), {}, "hidden"))
            else:
                specs.append(_parse_one(name, decl, category))
    return specs


def return_types(cls) -> tuple:
    return tuple(getattr(cls, "RETURN_TYPES", ()) or ())


def return_type_name(t: Any) -> str:
    """A COMBO output (a list of choices) is typed "COMBO"; strings stay as they are."""
    return "COMBO" if isinstance(t, (list, tuple)) else str(t)


def types_match(received: str, expected: str) -> bool:
    """ComfyUI's (non-strict) socket compatibility: equal, ``*`` on either side, or overlapping unions."""
    if received == expected or received == "*" or expected == "*":
        return True
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def is_output_node(cls) -> bool:
    return getattr(cls, "OUTPUT_NODE", False) is True


def validate_inputs_params(cls) -> tuple[list[str], bool] | None:
    """Parameter names of ``VALIDATE_INPUTS`` (without cls/self) and whether it takes ``**kwargs``; None if absent."""
    import inspect

    fn = getattr(cls, "VALIDATE_INPUTS", None)
    if fn is None:
        return None
    sig = inspect.signature(fn)  # bound classmethod / staticmethod: cls/self already dropped
    names = [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    return names, has_kwargs


def accepted_kwargs(fn, kwargs: dict) -> dict:
    """Keep only the keyword arguments ``fn`` accepts (all of them when it takes ``**kwargs``)."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return kwargs
    params = sig.parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in names}
