"""``--set NODE.input=value`` overrides, applied to an API-format prompt before validation.

``NODE`` is a node id, else a node title (``_meta.title``, from the UI's *Title*), else a class_type, and a
title or class_type must name exactly one node. ``value`` is parsed as JSON when it parses (``42``, ``0.5``,
``true``, ``"text"``, ``["4", 0]`` to re-link an input), otherwise taken as a plain string
(``--set 12.video=clips/dog.mp4``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .errors import OverrideError, WorkflowLoadError
from .nodeinfo import input_specs
from .validation import node_class
from .workflow import check_depth


@dataclass(frozen=True)
class Override:
    node: str
    input: str
    value: Any
    text: str  # as the user wrote it, for error messages


def parse_value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:  # not JSON (or a number with more digits than int() reads): the plain string
        return text
    except RecursionError:
        value = text
    try:
        check_depth(value, "--set value")
    except WorkflowLoadError as e:
        raise OverrideError(str(e)) from None
    if value is text:
        raise OverrideError(f"--set value {text[:20]}... nests lists or objects too deeply")
    return value


def parse_override(text: str) -> Override:
    """``"NODE.input=value"`` → ``Override``; the node part may itself contain dots (titles)."""
    target, sep, raw = text.partition("=")
    node, dot, name = target.strip().rpartition(".")
    if not sep or not dot or not node or not name:
        raise OverrideError(f"--set {text!r} must look like NODE.input=value (e.g. --set 3.seed=42 or "
                            f"--set 'Foley Sampler.steps=25')")
    return Override(node=node.strip(), input=name.strip(), value=parse_value(raw), text=text)


def find_node(prompt: Mapping, ref: str, *, what: str = "--set") -> str:
    """Resolve a node reference (id, unique title, unique class_type) to its id."""
    if ref in prompt:
        return ref
    by_title = [nid for nid, n in prompt.items() if (n.get("_meta") or {}).get("title") == ref]
    if len(by_title) == 1:
        return by_title[0]
    if len(by_title) > 1:
        raise OverrideError(f"{what}: title {ref!r} names {len(by_title)} nodes ({', '.join(by_title)}); use a node id")
    by_class = [nid for nid, n in prompt.items() if n.get("class_type") == ref]
    if len(by_class) == 1:
        return by_class[0]
    if len(by_class) > 1:
        raise OverrideError(f"{what}: class {ref!r} names {len(by_class)} nodes ({', '.join(by_class)}); use a node id")
    ids = ", ".join(list(prompt)[:20])
    raise OverrideError(f"{what}: no node with id, title or class_type {ref!r} (node ids: {ids})")


def apply_overrides(prompt: dict, overrides: Iterable[str | Override],
                    node_classes: Mapping[str, type] | None = None) -> dict:
    """Apply overrides in place (and return the prompt). Unknown inputs of known classes are errors."""
    for ov in overrides:
        ov = parse_override(ov) if isinstance(ov, str) else ov
        nid = find_node(prompt, ov.node)
        node = prompt[nid]
        cls = node_class(node, node_classes or {})
        if cls is not None:
            names = [s.name for s in input_specs(cls) if s.category != "hidden"]
            if ov.input not in names:
                raise OverrideError(
                    f"--set {ov.text!r}: node {nid} ({node.get('class_type')}) has no input {ov.input!r}; "
                    f"its inputs are: {', '.join(names) or '(none)'}"
                )
        node.setdefault("inputs", {})[ov.input] = ov.value
    return prompt
