"""Load a ComfyUI workflow file and bring it to API ("prompt") format.

API format, what ComfyUI's *Export (API)* writes and ``/prompt`` accepts::

    {"3": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["4", 0]}, "_meta": {"title": "..."}}}

UI format, what *Save* writes (litegraph)::

    {"nodes": [{"id": 3, "type": "KSampler", "mode": 0, "inputs": [{"name": "model", "type": "MODEL",
      "link": 1}], "widgets_values": [5, "randomize", 20, ...]}], "links": [[1, 4, 0, 3, 0, "MODEL"]]}

The UI→API conversion follows the frontend's ``graphToPrompt``: widget values are matched to inputs in the
order ``INPUT_TYPES`` declares them (required, then optional), skipping socket-only inputs, and widgets the
save holds no value for get their defaults, as in the frontend; an INT seed widget
(``seed``/``noise_seed`` or ``control_after_generate``) is followed by one frontend-only control value, a COMBO
with ``control_after_generate`` by two, an upload COMBO by its upload-button value; a link on an input wins
over its widget value (widgets converted to inputs keep a slot in ``widgets_values``). Reroutes pass their
source through, PrimitiveNodes become the literal value they hold, Note/MarkdownNote are dropped, muted nodes
(mode 2) are dropped together with the inputs that pointed at them, and bypassed nodes (mode 4) are dropped
with each consumer rewired to the bypassed node's input of the same type (the slot at the same index first).
Subgraphs and group nodes are reported as unsupported rather than guessed.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any, Mapping

from .errors import WorkflowLoadError
from .nodeinfo import CONTROL_VALUES, input_specs

logger = logging.getLogger(__name__)

MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
VIRTUAL_NODES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
_NOTE_NODES = frozenset({"Note", "MarkdownNote"})


def load_workflow_file(path: str | os.PathLike) -> dict:
    """Read a workflow JSON file; errors name the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise WorkflowLoadError(f"workflow file {path} does not exist") from None
    except IsADirectoryError:
        raise WorkflowLoadError(f"workflow path {path} is a directory; give a .json workflow file") from None
    except json.JSONDecodeError as e:
        raise WorkflowLoadError(f"workflow file {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError:
        raise WorkflowLoadError(f"workflow file {path} is not UTF-8 text; give a ComfyUI workflow .json") from None
    if not isinstance(data, dict):
        raise WorkflowLoadError(f"workflow file {path} must hold a JSON object, got {type(data).__name__}")
    return data


def detect_format(data: Mapping) -> str:
    """``"ui"``, ``"api"`` or raise ``WorkflowLoadError``."""
    if isinstance(data.get("nodes"), list):
        return "ui"
    if data and all(isinstance(v, Mapping) and "class_type" in v for v in data.values()):
        return "api"
    if isinstance(data.get("prompt"), Mapping):  # the body POSTed to /prompt
        return "api-wrapped"
    raise WorkflowLoadError(
        "workflow is neither ComfyUI API format ({id: {class_type, inputs}}) nor UI format ({nodes, links}); "
        "export it from ComfyUI with Save or Export (API)"
    )


def to_api_prompt(data: Mapping, node_classes: Mapping[str, type]) -> dict:
    """Any supported workflow dict → a fresh API-format prompt with string node ids."""
    fmt = detect_format(data)
    if fmt == "ui":
        return ui_to_api(data, node_classes)
    if fmt == "api-wrapped":
        return to_api_prompt(data["prompt"], node_classes)
    return normalize_api(data)


def load_workflow(source: str | os.PathLike | Mapping, node_classes: Mapping[str, type]) -> dict:
    """A workflow file path or dict (either format) → API-format prompt."""
    data = source if isinstance(source, Mapping) else load_workflow_file(source)
    return to_api_prompt(data, node_classes)


def normalize_api(prompt: Mapping) -> dict:
    """Deep copy with string node ids and ``[str(id), int(slot)]`` links (JSON numbers become ints)."""
    out: dict = {}
    for node_id, node in prompt.items():
        if not isinstance(node, Mapping):
            raise WorkflowLoadError(f"node {node_id} of the API workflow is not an object")
        inputs = node.get("inputs") or {}
        if not isinstance(inputs, Mapping):
            raise WorkflowLoadError(f"node {node_id}: 'inputs' must be an object, got {type(inputs).__name__}")
        new_inputs = {}
        for name, value in inputs.items():
            if _is_link(value):
                value = [str(value[0]), int(value[1]) if _is_intlike(value[1]) else value[1]]
            else:
                value = copy.deepcopy(value)
            new_inputs[str(name)] = value
        entry = {"class_type": node.get("class_type"), "inputs": new_inputs}
        if isinstance(node.get("_meta"), Mapping):
            entry["_meta"] = dict(node["_meta"])
        out[str(node_id)] = entry
    return out


def _is_intlike(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer())


def _is_link(value: Any) -> bool:
    """A ``[node_id, slot]`` pair (how API format marks a connection; list widget values use ``__value__``)."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) and not isinstance(value[0], bool) \
        and _is_intlike(value[1])


# ------------------------------------------------------------------------------------------------- UI format
def _link_table(links: list) -> dict:
    table = {}
    for link in links or []:
        if isinstance(link, Mapping):  # newer frontends may store objects
            lid = link.get("id")
            rec = (link.get("origin_id"), link.get("origin_slot"), link.get("target_id"), link.get("target_slot"),
                   link.get("type"))
        elif isinstance(link, (list, tuple)) and len(link) >= 5:
            lid, rec = link[0], (link[1], link[2], link[3], link[4], link[5] if len(link) > 5 else None)
        else:
            continue
        if lid is None or None in rec[:4]:
            continue
        table[lid] = rec
    return table


def _check_unsupported(data: Mapping) -> None:
    subgraphs = ((data.get("definitions") or {}).get("subgraphs") or [])
    sub_ids = {s.get("id") for s in subgraphs if isinstance(s, Mapping)}
    group_nodes = ((data.get("extra") or {}).get("groupNodes") or {})
    for node in data.get("nodes") or []:
        t = node.get("type")
        if t in sub_ids:
            raise WorkflowLoadError(
                f"node {node.get('id')} is a subgraph; the headless runner does not expand subgraphs yet: "
                f"unpack it in ComfyUI (right click > Unpack Subgraph) or export the workflow in API format"
            )
        if isinstance(t, str) and (t.startswith("workflow>") or t.startswith("workflow/") or t in group_nodes):
            raise WorkflowLoadError(
                f"node {node.get('id')} is a group node ({t}); convert it back to nodes in ComfyUI or export "
                f"the workflow in API format"
            )


class _UIGraph:
    def __init__(self, data: Mapping):
        self.nodes = {str(n.get("id")): n for n in data.get("nodes") or [] if n.get("id") is not None}
        self.links = _link_table(data.get("links") or [])

    def node_inputs(self, node: Mapping) -> list:
        return [i for i in node.get("inputs") or [] if isinstance(i, Mapping)]

    def resolve(self, link_id: Any, want_type: str | None) -> tuple | None:
        """Follow a link through reroutes, primitives and bypassed nodes.

        Returns ``("link", src_id, slot)``, ``("value", v)`` or None (the input ends up unconnected).
        """
        seen = set()
        while True:
            if link_id is None or link_id in seen or link_id not in self.links:
                return None
            seen.add(link_id)
            origin_id, origin_slot, _tid, _tslot, _type = self.links[link_id]
            origin = self.nodes.get(str(origin_id))
            if origin is None:  # dangling link: keep it so validation names the missing node
                return ("link", str(origin_id), int(origin_slot))
            otype, omode = origin.get("type"), origin.get("mode", MODE_ALWAYS)
            if otype == "Reroute":
                ins = self.node_inputs(origin)
                link_id = ins[0].get("link") if ins else None
                continue
            if otype == "PrimitiveNode":
                values = origin.get("widgets_values")
                if isinstance(values, list) and values:
                    return ("value", copy.deepcopy(values[0]))
                return None
            if omode == MODE_NEVER:
                return None  # the frontend drops inputs that point at muted nodes
            if omode == MODE_BYPASS:
                link_id = self._bypass_input(origin, int(origin_slot), want_type)
                continue
            return ("link", str(origin_id), int(origin_slot))

    def _bypass_input(self, node: Mapping, origin_slot: int, want_type: str | None) -> Any:
        ins = self.node_inputs(node)
        order = ([origin_slot] if 0 <= origin_slot < len(ins) else []) + list(range(len(ins)))
        for idx in order:
            if ins[idx].get("type") == want_type:
                return ins[idx].get("link")
        return None


def _widget_default(spec) -> Any:
    """The value a freshly created frontend widget holds (used when a save has no value for it)."""
    if "default" in spec.options:
        return copy.deepcopy(spec.options["default"])
    if spec.type == "COMBO":
        return spec.choices[0] if spec.choices else None
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec.type)


def _looks_like_control(value: Any) -> bool:
    # Current frontends save "fixed"/"randomize"/...; some older saves hold a boolean there.
    return isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)


def _widget_values_for(node: Mapping, specs: list, class_type: str) -> dict:
    """Map ``widgets_values`` (list or dict form) onto widget inputs by declaration order.

    Widgets without a saved value get their default, as the frontend would send for a freshly loaded node.
    """
    raw = node.get("widgets_values")
    widgets = [s for s in specs if s.is_widget]
    values: dict = {}
    if isinstance(raw, Mapping):  # some nodes serialize {name: value}
        values = {s.name: copy.deepcopy(raw[s.name]) for s in widgets if s.name in raw}
    elif isinstance(raw, list):
        i = 0
        for k, spec in enumerate(widgets):
            if i >= len(raw):
                break
            values[spec.name] = copy.deepcopy(raw[i])
            i += 1
            needed_after = sum(1 + s.control_widgets for s in widgets[k + 1:])
            for c in range(spec.control_widgets):
                if i >= len(raw):
                    break
                # Trust the declaration when the save has room for the extra values; otherwise (older saves
                # without them) skip only what really looks like a control value.
                room = len(raw) - i > needed_after + (spec.control_widgets - c - 1)
                if c == 0 and not room and not _looks_like_control(raw[i]):
                    break
                i += 1
            if spec.has_upload_widget and len(raw) - i > needed_after:
                i += 1  # the upload button's value ("image", "video", ...)
    elif raw is not None:
        raise WorkflowLoadError(f"node {node.get('id')} ({class_type}): widgets_values must be a list")
    for spec in widgets:
        if spec.name not in values:
            default = _widget_default(spec)
            if default is not None:
                values[spec.name] = default
    return values


def ui_to_api(data: Mapping, node_classes: Mapping[str, type]) -> dict:
    """Convert a UI-format (litegraph) workflow to API format, as the ComfyUI frontend does on *Queue*."""
    _check_unsupported(data)
    graph = _UIGraph(data)
    prompt: dict = {}
    for node_id, node in graph.nodes.items():
        class_type = node.get("type")
        if class_type in VIRTUAL_NODES or node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
            continue
        entry: dict = {"class_type": class_type, "inputs": {}}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[node_id] = entry
        cls = node_classes.get(class_type)
        if cls is None:
            # Keep the node so validation reports "unknown node type" with its id instead of silently dropping it.
            continue
        try:
            specs = [s for s in input_specs(cls) if s.category != "hidden"]
        except Exception as e:  # noqa: BLE001 - a broken node class must not crash the conversion
            raise WorkflowLoadError(f"node {node_id} ({class_type}): INPUT_TYPES() failed: {e}") from None
        inputs = _widget_values_for(node, specs, class_type)
        for inp in graph.node_inputs(node):
            name = inp.get("name")
            if name is None or inp.get("link") is None:
                continue
            src = graph.resolve(inp.get("link"), inp.get("type"))
            if src is None:
                # The frontend drops such an input entirely, widget value included (validation then reports it).
                inputs.pop(name, None)
                continue
            if src[0] == "value":
                inputs[name] = src[1]
            else:
                inputs[name] = [src[1], src[2]]
        # API order: declaration order first (readable diffs against ComfyUI's own export), then extras.
        order = {s.name: k for k, s in enumerate(specs)}
        entry["inputs"] = dict(sorted(inputs.items(), key=lambda kv: order.get(kv[0], len(order))))
    # Like graphToPrompt: inputs that point at nodes which are not in the prompt are removed.
    for entry in prompt.values():
        for name in [n for n, v in entry["inputs"].items() if _is_link(v) and str(v[0]) not in prompt
                     and str(v[0]) in graph.nodes]:
            del entry["inputs"][name]
    return prompt
