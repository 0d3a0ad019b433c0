"""API-format prompt → ComfyUI UI-format workflow, laid out for reading.

What ComfyUI's *Save* writes: nodes with ``pos``/``size``/``widgets_values`` and socket ``inputs``/``outputs`` that
refer to a ``links`` array, plus ``groups``. The layout runs left to right by stage, one group per stage
("Load", "Encode", "Sample", "Decode & save"); inside a group a node sits one column right of the nodes of the
same group it reads from, and each column is ordered so wires cross little. A Note node on the left says what the
graph does and which model files go where.

    from kling_foley_core.runner.ui_format import api_to_ui
    ui = api_to_ui(prompt, NODE_CLASS_MAPPINGS, note="What this graph does ...")

    python -m kling_foley_core.runner.ui_format API.json [OUT.json] [--note TEXT | --note-file NOTE.md]

``widgets_values`` follow the frontend: widget inputs in declaration order, a seed's ``control_after_generate``
value (written ``"fixed"``, so a shared workflow reproduces its result) and an upload button's value after an
upload input. A widget fed by a link keeps its slot (holding its default) and gets a socket naming the widget.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from .errors import WorkflowError
from .nodeinfo import input_specs, return_type_name, return_types

STAGES = ("Load", "Encode", "Sample", "Decode & save")
_GROUP_COLORS = {"Load": "#3f789e", "Encode": "#8A8", "Sample": "#a1309b", "Decode & save": "#b58b2a"}
# (substring of the class name, stage); the first match wins. Unmatched nodes join the latest stage they read from.
STAGE_RULES = (("Loader", "Load"), ("Load", "Load"), ("VideoFrom", "Load"), ("Decode", "Decode & save"),
               ("Encode", "Encode"), ("Conditioning", "Encode"), ("Sampler", "Sample"), ("Schedule", "Sample"),
               ("Vocode", "Decode & save"), ("Mono2Stereo", "Decode & save"), ("Save", "Decode & save"),
               ("Mux", "Decode & save"), ("Preview", "Decode & save"))

NODE_WIDTH, NOTE_WIDTH = 340, 440
COLUMN_GAP, GROUP_GAP, ROW_GAP = 50, 110, 40
GROUP_PAD, GROUP_TITLE = 20, 46
_SLOT_H, _WIDGET_H, _TEXTBOX_H, _TITLE_H = 22, 26, 90, 30
UPLOAD_VALUE = "image"  # what the frontend's upload button saves, for images and videos alike


def default_stage(class_type: str) -> str | None:
    for needle, stage in STAGE_RULES:
        if needle in class_type:
            return stage
    return None


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) \
        and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool)


def _default(spec) -> Any:
    if "default" in spec.options:
        return copy.deepcopy(spec.options["default"])
    if spec.type == "COMBO":
        return spec.choices[0] if spec.choices else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec.type)


def _widget_values(spec, value: Any) -> list:
    values = [value]
    values += ["fixed", ""][:spec.control_widgets] if spec.type == "COMBO" else ["fixed"] * spec.control_widgets
    if spec.has_upload_widget:
        values.append(UPLOAD_VALUE)
    return values


def _node_size(n_sockets: int, n_outputs: int, widgets: list) -> list[int]:
    height = max(n_sockets, n_outputs) * _SLOT_H + 10
    for spec in widgets:
        height += _TEXTBOX_H if spec.type == "STRING" and spec.options.get("multiline") else _WIDGET_H
    return [NODE_WIDTH, max(height, 2 * _SLOT_H + 10)]


def _note_size(text: str) -> list[int]:
    lines = sum(1 + len(line) // 60 for line in text.splitlines())
    return [NOTE_WIDTH, 40 + 17 * lines]


def api_to_ui(prompt: Mapping, node_classes: Mapping[str, type], *, note: str | None = None,
              stages: Mapping[str, str] | None = None, workflow_id: str | None = None) -> dict:
    """A laid-out UI-format workflow from an API-format ``prompt`` (node ids must be integers, as the UI's are).

    ``note``: text of a Note node at the left (what the graph does, which files go where). ``stages``:
    ``{node id or class_type: stage}`` where :data:`STAGE_RULES` guess wrong. ``workflow_id``: the save's id
    (default: derived from the graph, so converting the same file twice gives the same output).
    """
    ids = {}
    for nid in prompt:
        try:
            ids[nid] = int(nid)
        except (TypeError, ValueError):
            raise ValueError(f"node id {nid!r}: UI-format node ids are integers; renumber the API workflow") from None
    classes = {}
    for nid, entry in prompt.items():
        cls = node_classes.get(entry.get("class_type"))
        if cls is None:
            raise ValueError(f"node {nid}: class {entry.get('class_type')!r} is not among the given node classes")
        classes[nid] = cls
    order = _topological(prompt)
    stage = _stages(prompt, order, stages or {})

    nodes, links = {}, []
    for k, nid in enumerate(order):
        entry, cls = prompt[nid], classes[nid]
        specs = [s for s in input_specs(cls) if s.category != "hidden"]
        given = entry.get("inputs") or {}
        unknown = sorted(set(given) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"node {nid} ({entry['class_type']}): inputs {unknown} are not declared by the class")
        inputs, widgets_values = [], []
        for spec in specs:
            value = given.get(spec.name)
            if spec.is_widget:
                widgets_values += _widget_values(spec, _default(spec) if value is None or _is_link(value) else
                                                 copy.deepcopy(value))
                if _is_link(value):
                    inputs.append({"name": spec.name, "type": spec.type, "widget": {"name": spec.name}, "link": None})
            else:
                inputs.append({"name": spec.name, "type": spec.type, "link": None})
            if _is_link(value):
                src = str(value[0])
                if src not in prompt:
                    raise ValueError(f"node {nid} ({entry['class_type']}): input {spec.name!r} reads node {src}, "
                                     f"which is not in the workflow")
                out_types = return_types(classes[src])
                if not 0 <= value[1] < len(out_types):
                    raise ValueError(f"node {nid}: input {spec.name!r} reads output {value[1]} of node {src}, which "
                                     f"has {len(out_types)}")
                links.append([len(links) + 1, ids[src], value[1], ids[nid], len(inputs) - 1,
                              return_type_name(out_types[value[1]])])
                inputs[-1]["link"] = len(links)
        outs = return_types(cls)
        names = tuple(getattr(cls, "RETURN_NAMES", ()) or ())
        outputs = [{"name": names[i] if i < len(names) else return_type_name(t), "type": return_type_name(t),
                    "links": [], "slot_index": i} for i, t in enumerate(outs)]
        node = {"id": ids[nid], "type": entry["class_type"], "pos": [0, 0],
                "size": _node_size(sum(1 for i in inputs if "widget" not in i), len(outputs),
                                   [s for s in specs if s.is_widget]),
                "flags": {}, "order": k, "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": entry["class_type"]}, "widgets_values": widgets_values}
        title = (entry.get("_meta") or {}).get("title")
        if title:
            node["title"] = title
        nodes[nid] = node
    by_id = {node["id"]: node for node in nodes.values()}
    for lid, src, slot, _dst, _dslot, _t in links:
        by_id[src]["outputs"][slot]["links"].append(lid)
    for node in nodes.values():
        for out in node["outputs"]:
            out["links"] = out["links"] or None

    groups = _layout(prompt, order, stage, nodes, x0=NOTE_WIDTH + GROUP_GAP if note else 0)
    all_nodes = [nodes[nid] for nid in order]
    if note:
        note_id = max(ids.values(), default=0) + 1
        all_nodes.append({"id": note_id, "type": "Note", "pos": [0, 0], "size": _note_size(note), "flags": {},
                          "order": len(order), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                          "widgets_values": [note], "title": "About this workflow", "color": "#432",
                          "bgcolor": "#653"})
    body = {"nodes": all_nodes, "links": links, "groups": groups}
    wid = workflow_id or str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(body, sort_keys=True)))
    return {"id": wid, "revision": 0, "last_node_id": max((n["id"] for n in all_nodes), default=0),
            "last_link_id": len(links), **body, "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [40, 60]}}, "version": 0.4}


def _producers(entry: Mapping) -> list[str]:
    return [str(v[0]) for v in (entry.get("inputs") or {}).values() if _is_link(v)]


def _topological(prompt: Mapping) -> list[str]:
    """Node ids, producers before consumers, ties by numeric id."""
    done, order = set(), []
    visiting = set()

    def visit(nid: str) -> None:
        if nid in done:
            return
        if nid in visiting:
            raise ValueError(f"node {nid} is part of a cycle; a workflow is a directed acyclic graph")
        visiting.add(nid)
        for src in sorted(_producers(prompt[nid]), key=int):
            if src in prompt:
                visit(src)
        visiting.discard(nid)
        done.add(nid)
        order.append(nid)

    for nid in sorted(prompt, key=int):
        visit(nid)
    return order


def _stages(prompt: Mapping, order: list[str], override: Mapping[str, str]) -> dict:
    stage = {}
    for nid in order:
        cls_name = prompt[nid]["class_type"]
        s = override.get(nid) or override.get(cls_name) or default_stage(cls_name)
        if s is None:  # the latest stage it reads from, else the first
            read = [STAGES.index(stage[p]) for p in _producers(prompt[nid]) if stage.get(p) in STAGES]
            s = STAGES[max(read)] if read else STAGES[0]
        if s not in STAGES:
            raise ValueError(f"node {nid}: stage {s!r} is not one of {', '.join(STAGES)}")
        stage[nid] = s
    return stage


def _layout(prompt: Mapping, order: list[str], stage: dict, nodes: dict, x0: int) -> list[dict]:
    """Set every node's ``pos``; return the groups around each stage."""
    column = {}
    for nid in order:  # producers come first, so their columns are known
        same = [column[p] for p in _producers(prompt[nid]) if p in column and stage[p] == stage[nid]]
        column[nid] = max(same) + 1 if same else 0
    columns: dict = defaultdict(list)  # (stage index, column) → node ids
    for nid in order:
        columns[(STAGES.index(stage[nid]), column[nid])].append(nid)
    keys = sorted(columns)

    x, xs, prev_stage = x0, {}, None
    for key in keys:
        if prev_stage is not None:
            x += GROUP_GAP if key[0] != prev_stage else COLUMN_GAP
        xs[key] = x
        x += max(nodes[n]["size"][0] for n in columns[key])
        prev_stage = key[0]

    rank = {nid: k for k, key in enumerate(keys) for nid in columns[key]}
    producers = {nid: [p for p in _producers(prompt[nid]) if p in prompt] for nid in order}
    consumers: dict = defaultdict(list)
    for nid in order:
        for p in producers[nid]:
            consumers[p].append(nid)
    top = GROUP_TITLE + GROUP_PAD

    def place() -> None:
        for key in keys:
            y = top
            for nid in columns[key]:
                nodes[nid]["pos"] = [xs[key], y]
                y += nodes[nid]["size"][1] + _TITLE_H + ROW_GAP

    def centre(nid: str) -> float:
        return nodes[nid]["pos"][1] + nodes[nid]["size"][1] / 2

    def weight(nid: str) -> tuple:
        """Nodes that read nothing (loaders) are ordered by how soon their output is used, so their wires fan
        out in order; the others by the mean height of the nearest nodes they read."""
        if not producers[nid]:
            near = min((rank[c] for c in consumers[nid]), default=len(keys))
            ys = [centre(c) for c in consumers[nid] if rank[c] == near]
            return (near, sum(ys) / len(ys) if ys else 0.0)
        near = max(rank[p] for p in producers[nid])  # the closest inputs decide, not a far loader
        ys = [centre(p) for p in producers[nid] if rank[p] == near]
        return (0, sum(ys) / len(ys))

    place()
    for _sweep in range(4):
        for key in keys:
            current = {nid: k for k, nid in enumerate(columns[key])}
            weights = {nid: weight(nid) for nid in columns[key]}
            columns[key].sort(key=lambda n: (weights[n], current[n]))
            place()

    groups = []
    for s_index, name in enumerate(STAGES):
        members = [nodes[n] for n in order if STAGES.index(stage[n]) == s_index]
        if not members:
            continue
        left = min(n["pos"][0] for n in members) - GROUP_PAD
        right = max(n["pos"][0] + n["size"][0] for n in members) + GROUP_PAD
        upper = min(n["pos"][1] for n in members) - _TITLE_H - GROUP_TITLE
        lower = max(n["pos"][1] + n["size"][1] for n in members) + GROUP_PAD
        groups.append({"id": len(groups) + 1, "title": name, "bounding": [left, upper, right - left, lower - upper],
                       "color": _GROUP_COLORS[name], "font_size": 24, "flags": {}})
    return groups


def convert_file(source: str | Path, target: str | Path | None = None, *, note: str | None = None,
                 node_classes: Mapping[str, type] | None = None) -> dict:
    """Convert a workflow file (API format; a UI file is laid out again and keeps its Note) to a laid-out UI file;
    writes ``target`` (default: next to it as ``NAME.ui.json``; may be ``source`` itself)."""
    from .workflow import load_workflow_file, to_api_prompt

    source = Path(source)
    data = load_workflow_file(source)
    if node_classes is None:
        from ..cli import load_node_classes

        node_classes = load_node_classes()
    if note is None and isinstance(data.get("nodes"), list):  # a UI file is laid out again and keeps its note
        note = next((n["widgets_values"][0] for n in data["nodes"] if isinstance(n, Mapping)
                     and n.get("type") in ("Note", "MarkdownNote") and n.get("widgets_values")), None)
    ui = api_to_ui(to_api_prompt(data, node_classes), node_classes, note=note)
    target = Path(target) if target is not None else source.with_suffix(".ui.json")
    target.write_text(json.dumps(ui, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return ui


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kling_foley_core.runner.ui_format",
                                description="Convert an API-format workflow to a laid-out UI-format workflow.")
    p.add_argument("source", help="API-format workflow .json (a UI-format one is laid out again)")
    p.add_argument("target", nargs="?", help="output .json (default: SOURCE with .ui.json)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--note", help="text of the Note node (what the graph does, which files go where)")
    g.add_argument("--note-file", help="read the Note's text from this file")
    args = p.parse_args(argv)
    note = Path(args.note_file).read_text(encoding="utf-8").strip() if args.note_file else args.note
    try:
        ui = convert_file(args.source, args.target, note=note)
    except (OSError, ValueError, WorkflowError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(ui['nodes'])} nodes, {len(ui['links'])} links, groups: "
          f"{', '.join(g['title'] for g in ui['groups'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
