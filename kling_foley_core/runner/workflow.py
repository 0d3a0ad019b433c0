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
Subgraphs (``definitions.subgraphs``) are expanded into their nodes first (see ``subgraphs``); group nodes (the
older ``extra.groupNodes``) are reported as unsupported rather than guessed.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from .errors import WorkflowLoadError
from .nodeinfo import CONTROL_VALUES, input_specs
from .subgraphs import expand_subgraphs

logger = logging.getLogger(__name__)

MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
VIRTUAL_NODES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
_NOTE_NODES = frozenset({"Note", "MarkdownNote"})


MAX_DEPTH = 100  # nesting of objects/lists; real workflows stay below 20, and deeper would exhaust recursion


class _DuplicateKey(ValueError):
    pass


def _reject_duplicates(pairs: list) -> dict:
    """``object_pairs_hook``: a key given twice (e.g. a node id) is an error, not last-one-wins."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_workflow_text(text: str, where: str = "workflow") -> dict:
    """Parse a workflow's JSON text; every problem is a one-line ``WorkflowLoadError`` that starts with ``where``."""
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except _DuplicateKey as e:
        raise WorkflowLoadError(f"{where} gives the key {e.args[0]!r} twice in one object (a node id or an input "
                                f"written twice); keep one") from None
    except json.JSONDecodeError as e:
        raise WorkflowLoadError(f"{where} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise WorkflowLoadError(f"{where} nests lists or objects too deeply to be a workflow") from None
    except ValueError as e:  # e.g. a number with more digits than int() reads
        raise WorkflowLoadError(f"{where} is not a usable JSON workflow: {e}") from None
    if not isinstance(data, dict):
        raise WorkflowLoadError(f"{where} must hold a JSON object, got {_json_kind(data)}")
    check_depth(data, where)
    return data


_SCALARS = (str, int, float, bool, type(None))


def check_depth(data: Any, where: str = "workflow") -> None:
    """Refuse values nested deeper than ``MAX_DEPTH`` (or holding themselves) before anything recurses into them.

    Level by level, each container counted once per level, so shared sub-objects cost no more than a tree.
    """
    level: Any = [data] if isinstance(data, (Mapping, list, tuple)) else []
    for _ in range(MAX_DEPTH):
        below: dict = {}
        for value in level:
            for child in value.values() if isinstance(value, Mapping) else value:
                if isinstance(child, (dict, list, tuple)) or (not isinstance(child, _SCALARS)
                                                              and isinstance(child, Mapping)):
                    below[id(child)] = child
        if not below:
            return
        level = below.values()
    raise WorkflowLoadError(f"{where} nests lists or objects more than {MAX_DEPTH} levels deep (or contains "
                            f"itself); a workflow never does")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def load_workflow_file(path: str | os.PathLike) -> dict:
    """Read a workflow JSON file; errors name the file."""
    path = os.fspath(path)
    where = f"workflow file {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise WorkflowLoadError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise WorkflowLoadError(f"workflow path {path} is a directory; give a .json workflow file") from None
    except OSError as e:  # permission, symlink loop, ...
        raise WorkflowLoadError(f"{where} cannot be read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WorkflowLoadError(f"{where} is not UTF-8 text; give a ComfyUI workflow .json") from None
    return parse_workflow_text(text, where)


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
    if isinstance(source, Mapping):
        check_depth(source)
        data = source
    elif isinstance(source, (str, os.PathLike)):
        data = load_workflow_file(source)
    else:
        raise WorkflowLoadError(f"a workflow is a file path or a dict, got {type(source).__name__}")
    return to_api_prompt(data, node_classes)


def normalize_api(prompt: Mapping) -> dict:
    """Deep copy with string node ids and ``[str(id), int(slot)]`` links (JSON numbers become ints).

    The node's ``class_type`` is kept whatever it is: validation reports one that is not a known class name.
    """
    out: dict = {}
    for node_id, node in prompt.items():
        if not isinstance(node, Mapping):
            raise WorkflowLoadError(f"node {node_id} of the API workflow is {_json_kind(node)}, not an object")
        inputs = node.get("inputs", {})
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, Mapping):
            raise WorkflowLoadError(f"node {node_id}: 'inputs' must be an object, got {_json_kind(inputs)}")
        new_inputs = {}
        for name, value in inputs.items():
            if _is_link(value):
                value = [str(value[0]), int(value[1])]
            else:
                value = copy.deepcopy(value)
            new_inputs[str(name)] = value
        entry = {"class_type": copy.deepcopy(node.get("class_type")), "inputs": new_inputs}
        if isinstance(node.get("_meta"), Mapping):
            entry["_meta"] = copy.deepcopy(dict(node["_meta"]))
        if str(node_id) in out:
            raise WorkflowLoadError(f"node id {node_id!r} is given twice in the API workflow; keep one")
        out[str(node_id)] = entry
    return out


def _is_intlike(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer())


def _is_link(value: Any) -> bool:
    """A ``[node_id, slot]`` pair (how API format marks a connection; list widget values use ``__value__``)."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) and not isinstance(value[0], bool) \
        and _is_intlike(value[1])


# ------------------------------------------------------------------------------------------------- UI format
def _ref(value: Any) -> int | str | None:
    """A node or link id as saved (an integer or a string), else None."""
    if isinstance(value, str) and value:
        return value
    if _is_intlike(value):
        return int(value)
    return None


def _link_table(links: Any) -> dict:
    """``{link id: (origin id, origin slot, target id, target slot, type)}``; a record with a null end is skipped
    (the frontend leaves those behind), one of the wrong shape is an error."""
    if links is None:
        return {}
    if not isinstance(links, list):
        raise WorkflowLoadError(f"UI workflow: 'links' must be a list, got {_json_kind(links)}")
    table = {}
    for k, link in enumerate(links):
        if isinstance(link, Mapping):  # newer frontends may store objects
            fields = [link.get(f) for f in ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")]
        elif isinstance(link, list) and len(link) >= 5:
            fields = list(link[:6]) + [None] * (6 - len(link[:6]))
        else:
            raise WorkflowLoadError(f"UI workflow: links[{k}] is {_json_kind(link)}, not a link record "
                                    f"[id, origin, slot, target, slot, type]")
        if None in fields[:5]:
            continue
        lid, origin, target = _ref(fields[0]), _ref(fields[1]), _ref(fields[3])
        slots = [int(v) if _is_intlike(v) else None for v in (fields[2], fields[4])]
        if None in (lid, origin, target, *slots):
            raise WorkflowLoadError(f"UI workflow: links[{k}] is malformed (ids must be integers or strings and "
                                    f"slots integers): {_short(link)}")
        if lid in table:
            raise WorkflowLoadError(f"UI workflow: link id {lid!r} is given twice in 'links'; keep one")
        table[lid] = (origin, slots[0], target, slots[1], fields[5])
    return table


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _ui_nodes(nodes: list) -> dict:
    """``{str(id): node}`` of a UI workflow's ``nodes`` list, each node's shape checked."""
    out: dict = {}
    for k, node in enumerate(nodes):
        if not isinstance(node, Mapping):
            raise WorkflowLoadError(f"UI workflow: nodes[{k}] is {_json_kind(node)}, not a node object")
        nid = _ref(node.get("id"))
        if nid is None:
            raise WorkflowLoadError(f"UI workflow: nodes[{k}] has no usable id (got {_short(node.get('id'))})")
        where = f"UI workflow: node {nid}"
        if str(nid) in out:
            raise WorkflowLoadError(f"{where} is given twice in 'nodes'; keep one")
        if not isinstance(node.get("type"), str) or not node["type"]:
            raise WorkflowLoadError(f"{where}: 'type' must be a node class name, got {_short(node.get('type'))}")
        mode = node.get("mode", MODE_ALWAYS)
        if mode is not None and not _is_intlike(mode):
            raise WorkflowLoadError(f"{where}: 'mode' must be a number (0 always, 2 muted, 4 bypassed), got "
                                    f"{_short(mode)}")
        inputs = node.get("inputs")
        if inputs is not None and not isinstance(inputs, list):
            raise WorkflowLoadError(f"{where}: 'inputs' must be a list, got {_json_kind(inputs)}")
        for j, inp in enumerate(inputs or []):
            if not isinstance(inp, Mapping):
                raise WorkflowLoadError(f"{where}: inputs[{j}] is {_json_kind(inp)}, not an input object")
            if not isinstance(inp.get("name"), str):
                raise WorkflowLoadError(f"{where}: inputs[{j}] has no name (got {_short(inp.get('name'))})")
            if inp.get("link") is not None and _ref(inp["link"]) is None:
                raise WorkflowLoadError(f"{where}: input '{inp['name']}' links to {_short(inp['link'])}, which is "
                                        f"not a link id")
        values = node.get("widgets_values")
        if values is not None and not isinstance(values, (list, Mapping)):
            raise WorkflowLoadError(f"{where} ({node['type']}): widgets_values must be a list, got "
                                    f"{_json_kind(values)}")
        out[str(nid)] = node
    return out


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _check_unsupported(data: Mapping, nodes: dict) -> None:
    group_nodes = _mapping(_mapping(data.get("extra")).get("groupNodes"))
    for nid, node in nodes.items():
        t = node["type"]
        if t.startswith("workflow>") or t.startswith("workflow/") or t in group_nodes:
            raise WorkflowLoadError(
                f"node {nid} is a group node ({t}); convert it back to nodes in ComfyUI or export "
                f"the workflow in API format"
            )


class _UIGraph:
    def __init__(self, data: Mapping):
        self.nodes = _ui_nodes(data.get("nodes"))
        self.links = _link_table(data.get("links"))

    def node_inputs(self, node: Mapping) -> list:
        return list(node.get("inputs") or [])

    def resolve(self, link_id: Any, want_type: str | None) -> tuple | None:
        """Follow a link through reroutes, primitives and bypassed nodes.

        Returns ``("link", src_id, slot)``, ``("value", v)`` or None (the input ends up unconnected).
        """
        seen = set()
        while True:
            link_id = _ref(link_id)
            if link_id is None or link_id in seen or link_id not in self.links:
                return None
            seen.add(link_id)
            origin_id, origin_slot, _tid, _tslot, _type = self.links[link_id]
            origin = self.nodes.get(str(origin_id))
            if origin is None:  # dangling link: keep it so validation names the missing node
                return ("link", str(origin_id), origin_slot)
            otype, omode = origin["type"], origin.get("mode", MODE_ALWAYS)
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
                link_id = self._bypass_input(origin, origin_slot, want_type)
                continue
            return ("link", str(origin_id), origin_slot)

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
    for spec in widgets:
        if spec.name not in values:
            default = _widget_default(spec)
            if default is not None:
                values[spec.name] = default
    return values


def ui_to_api(data: Mapping, node_classes: Mapping[str, type]) -> dict:
    """Convert a UI-format (litegraph) workflow to API format, as the ComfyUI frontend does on *Queue*."""
    data = expand_subgraphs(data)
    graph = _UIGraph(data)
    _check_unsupported(data, graph.nodes)
    prompt: dict = {}
    for node_id, node in graph.nodes.items():
        class_type = node["type"]
        if class_type in VIRTUAL_NODES or node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
            continue
        entry: dict = {"class_type": class_type, "inputs": {}}
        if isinstance(node.get("title"), str) and node["title"]:
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
