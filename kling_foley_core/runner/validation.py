"""Check an API-format prompt against its node classes before anything runs.

The checks and error kinds follow ComfyUI's ``validate_prompt``/``validate_inputs`` (execution.py), so a workflow
that passes here also passes in ComfyUI: unknown node type, missing required input, malformed link, link to a
missing node or to an output slot the node does not have, link whose output type does not fit the input
(``*`` fits anything, ``A,B`` unions fit on overlap), INT/FLOAT outside min/max, COMBO value not in its list,
values that cannot be the declared primitive type, and the class's own ``VALIDATE_INPUTS``. Two things are
stricter than ComfyUI on purpose: an INT given a fractional number or a boolean, and a BOOLEAN given a string
other than "true"/"false", are errors instead of being silently coerced. Cycles are reported here instead of at
execution time. Every problem is collected; ``validate_prompt`` raises them together.

Like ComfyUI, only nodes that some output node depends on are checked in detail (a stray, unconnected node
with a bad widget does not block the run), but unknown node types are reported wherever they are.
"""
from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import NodeError, WorkflowValidationError
from .nodeinfo import (InputSpec, input_specs, is_output_node, return_type_name, return_types, types_match,
                       validate_inputs_params)
from .workflow import _is_link

logger = logging.getLogger(__name__)
PROMPT = "(prompt)"


def node_class(node: Mapping, node_classes: Mapping[str, type]) -> type | None:
    """The class a prompt entry names, or None (unknown, or a class_type that is not even a string)."""
    ct = node.get("class_type")
    return node_classes.get(ct) if isinstance(ct, str) else None


def output_nodes(prompt: Mapping, node_classes: Mapping[str, type]) -> list[str]:
    return [nid for nid, n in prompt.items() if (cls := node_class(n, node_classes)) and is_output_node(cls)]


def dependencies(prompt: Mapping, roots: Iterable[str]) -> list[str]:
    """``roots`` and every node they (transitively) take links from, in discovery order."""
    seen: dict[str, None] = {}
    stack = list(roots)
    while stack:
        nid = stack.pop()
        if nid in seen or nid not in prompt:
            continue
        seen[nid] = None
        for value in (prompt[nid].get("inputs") or {}).values():
            if _is_link(value):
                stack.append(str(value[0]))
    return list(seen)


def find_cycle(prompt: Mapping, nodes: Iterable[str]) -> list[str] | None:
    """One dependency cycle among ``nodes`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    for start in nodes:
        if start in state:
            continue
        path: list[str] = []
        stack: list[tuple[str, list[str]]] = [(start, _sources(prompt, start))]
        state[start] = 1
        path.append(start)
        while stack:
            nid, todo = stack[-1]
            if not todo:
                state[nid] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and nxt in prompt:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, _sources(prompt, nxt)))
    return None


def _sources(prompt: Mapping, nid: str) -> list[str]:
    return [str(v[0]) for v in (prompt[nid].get("inputs") or {}).values() if _is_link(v)]


def _coerce(spec: InputSpec, value: Any) -> tuple[Any, str | None]:
    """Convert a literal to the declared primitive type; returns (value, error message or None)."""
    t = spec.type
    if t == "INT":
        if isinstance(value, bool):
            return value, f"expected an integer, got a boolean ({value})"
        if isinstance(value, int):
            return value, None
        if isinstance(value, float):
            return (int(value), None) if value.is_integer() else (value, f"expected an integer, got {value}")
        if isinstance(value, str):
            try:
                return int(value.strip()), None
            except ValueError:
                return value, f"expected an integer, got {_short(value)}"
        return value, f"expected an integer, got {type(value).__name__}"
    if t == "FLOAT":
        if isinstance(value, bool):
            return value, f"expected a number, got a boolean ({value})"
        if not isinstance(value, (int, float, str)):
            return value, f"expected a number, got {type(value).__name__}"
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except ValueError:
            return value, f"expected a number, got {_short(value)}"
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):  # NaN passes every range check, so it never gets that far
            return value, f"expected a finite number, got {_short(value)}"
        return number, None
    if t == "BOOLEAN":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, int) and value in (0, 1):
            return bool(value), None
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true", None
        return value, f"expected true or false, got {_short(value)}"
    if t == "STRING":
        if isinstance(value, str):
            return value, None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _short(value, 10_000), None
        return value, f"expected a string, got {type(value).__name__}"
    return value, None


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer with more digits than repr() writes
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else text[:limit] + "..."


def _choices_text(choices: tuple) -> str:
    return f"(list of {len(choices)} values)" if len(choices) > 20 else ", ".join(repr(c) for c in choices)


def _call_class_fn(cls: type, name: str, kwargs: dict):
    """Call a V1 class hook (classmethod/staticmethod, or a plain method on a fresh instance)."""
    import inspect

    raw = inspect.getattr_static(cls, name)
    fn = getattr(cls, name) if isinstance(raw, (classmethod, staticmethod)) else getattr(cls(), name)
    return fn(**kwargs)


class _Validator:
    def __init__(self, prompt: dict, node_classes: Mapping[str, type]):
        self.prompt = prompt
        self.classes = node_classes
        self.errors: list[NodeError] = []

    def err(self, nid: str, kind: str, message: str, input_name: str | None = None) -> None:
        class_type = self.prompt.get(nid, {}).get("class_type", "") if nid != PROMPT else ""
        class_type = class_type if isinstance(class_type, str) else _short(class_type)
        self.errors.append(NodeError(nid, class_type, kind, message, input_name))

    def check_classes(self) -> None:
        known = list(self.classes)
        for nid, node in self.prompt.items():
            ct = node.get("class_type")
            if not ct:
                self.err(nid, "invalid_prompt", "node has no class_type")
            elif not isinstance(ct, str):
                self.err(nid, "invalid_prompt", f"class_type must be a node class name, got {_short(ct)}")
            elif ct not in self.classes:
                close = difflib.get_close_matches(str(ct), known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else \
                    "; is the custom node pack that provides it installed?"
                self.err(nid, "unknown_node_type", f"unknown node type {ct!r}{hint}")

    def check_node(self, nid: str) -> None:
        node = self.prompt[nid]
        cls = node_class(node, self.classes)
        if cls is None:
            return
        try:
            specs = [s for s in input_specs(cls) if s.category != "hidden"]
        except Exception as e:  # noqa: BLE001
            self.err(nid, "exception_during_validation", f"INPUT_TYPES() failed: {e}")
            return
        inputs = node.setdefault("inputs", {})
        vparams = validate_inputs_params(cls)
        custom_names, custom_kwargs = vparams if vparams is not None else ([], False)
        received_types: dict[str, str] = {}
        for spec in specs:
            if spec.name not in inputs:
                if spec.category == "required":
                    self.err(nid, "required_input_missing", "required input is missing", spec.name)
                continue
            value = inputs[spec.name]
            if isinstance(value, list):
                if not _is_link(value):
                    self.err(nid, "bad_linked_input",
                             f"bad linked input {_short(value)}: must be a [node_id, output_index] pair", spec.name)
                    continue
                self._check_link(nid, spec, value, received_types, "input_types" in custom_names)
                continue
            if isinstance(value, dict) and "__value__" in value:  # ComfyUI's escape for list-valued widgets
                value = value["__value__"]
            value, problem = _coerce(spec, value)
            if problem:
                self.err(nid, "invalid_input_type", f"{problem} ({spec.type} input)", spec.name)
                continue
            inputs[spec.name] = value
            if spec.name in custom_names or custom_kwargs:
                continue  # ComfyUI leaves range/choice checks of these inputs to VALIDATE_INPUTS
            self._check_range(nid, spec, value)
        if vparams is not None:
            self._custom(nid, cls, specs, inputs, custom_names, custom_kwargs, received_types)

    def _check_link(self, nid: str, spec: InputSpec, value: list, received_types: dict, skip_type: bool) -> None:
        src, slot = str(value[0]), int(value[1])
        if src not in self.prompt:
            self.err(nid, "linked_node_missing", f"linked to node {src}, which is not in the workflow", spec.name)
            return
        src_cls = node_class(self.prompt[src], self.classes)
        if src_cls is None:
            return  # reported as unknown_node_type
        outs = return_types(src_cls)
        if not 0 <= slot < len(outs):
            self.err(nid, "output_index_out_of_range",
                     f"linked to output {slot} of node {src} ({self.prompt[src].get('class_type')}), which has "
                     f"{len(outs)} output{'s' if len(outs) != 1 else ''}", spec.name)
            return
        got = return_type_name(outs[slot])
        received_types[spec.name] = got
        if skip_type:
            return
        if not types_match(got, spec.type):
            self.err(nid, "return_type_mismatch",
                     f"linked output of node {src} is {got}, the input expects {spec.type}", spec.name)

    def _check_range(self, nid: str, spec: InputSpec, value: Any) -> None:
        if spec.type in ("INT", "FLOAT"):
            lo, hi = spec.options.get("min"), spec.options.get("max")
            if lo is not None and value < lo:
                self.err(nid, "value_smaller_than_min", f"value {_short(value)} is smaller than the minimum {lo}",
                         spec.name)
            elif hi is not None and value > hi:
                self.err(nid, "value_bigger_than_max", f"value {_short(value)} is bigger than the maximum {hi}",
                         spec.name)
        elif spec.type == "COMBO" and spec.choices is not None:
            if value not in spec.choices:
                close = difflib.get_close_matches(value if isinstance(value, str) else _short(value),
                                                 [str(c) for c in spec.choices], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.err(nid, "value_not_in_list",
                         f"value {_short(value)} is not one of: {_choices_text(spec.choices)}{hint}", spec.name)

    def _custom(self, nid, cls, specs, inputs, names, has_kwargs, received_types) -> None:
        declared = {s.name for s in specs}
        kwargs = {}
        for name, value in inputs.items():
            if name not in declared or not (has_kwargs or name in names):
                continue
            kwargs[name] = None if _is_link(value) else value  # linked values are unknown before execution
        if "input_types" in names:
            kwargs["input_types"] = dict(received_types)
        try:
            result = _call_class_fn(cls, "VALIDATE_INPUTS", kwargs)
        except Exception as e:  # noqa: BLE001 - report, do not crash validation
            self.err(nid, "exception_during_validation", f"VALIDATE_INPUTS raised {type(e).__name__}: {e}")
            return
        if result is not True:
            msg = "custom validation failed" if result is False else f"custom validation failed: {result}"
            self.err(nid, "custom_validation_failed", msg)


def collect_errors(prompt: dict, node_classes: Mapping[str, type], outputs: Iterable[str] | None = None) -> list[NodeError]:
    """All validation problems of ``prompt`` (coerced widget values are written back into it)."""
    v = _Validator(prompt, node_classes)
    if not isinstance(prompt, dict) or not prompt:
        v.err(PROMPT, "invalid_prompt", "the workflow has no nodes")
        return v.errors
    v.check_classes()
    roots = list(outputs) if outputs is not None else output_nodes(prompt, node_classes)
    for r in roots:
        if r not in prompt:
            v.err(PROMPT, "invalid_prompt", f"requested output node {r} is not in the workflow")
    roots = [r for r in roots if r in prompt]
    if not roots:
        if not any(e.kind == "unknown_node_type" for e in v.errors):
            v.err(PROMPT, "prompt_no_outputs",
                  "the workflow has no output node (OUTPUT_NODE = True), so nothing would run; add a save node")
        return v.errors
    needed = dependencies(prompt, roots)
    cycle = find_cycle(prompt, needed)
    if cycle:
        v.err(cycle[0], "dependency_cycle", "dependency cycle: " + " -> ".join(cycle))
    for nid in needed:
        v.check_node(nid)
    return v.errors


def validate_prompt(prompt: dict, node_classes: Mapping[str, type], outputs: Iterable[str] | None = None) -> dict:
    """Raise ``WorkflowValidationError`` listing every problem; returns the (coerced) prompt when valid."""
    errors = collect_errors(prompt, node_classes, outputs)
    if errors:
        raise WorkflowValidationError(errors)
    return prompt
