"""Expand the subgraphs of a UI-format workflow (``definitions.subgraphs`` in newer ComfyUI saves) into plain nodes.

A subgraph is a graph of its own, stored once under ``definitions.subgraphs`` with an ``id`` (a UUID), its
``nodes``, its ``links`` (objects; an end at node ``-10`` is the subgraph's input ``origin_slot``, an end at
``-20`` its output ``target_slot``) and its ``inputs``/``outputs``. A node whose ``type`` is that id is an instance.

Each instance is replaced by copies of the subgraph's nodes, with ids ``"<instance id>:<inner id>"`` (the ids
ComfyUI itself gives them when it runs the graph), nested subgraphs recursively. Each of the instance's inputs
and outputs becomes a Reroute, so the UI reader follows wires across the boundary as it follows any reroute. An
input that is not wired outside takes the value the instance holds for it (a promoted widget) and otherwise
leaves the inner nodes with their own widget values. A muted or bypassed instance mutes or bypasses its nodes.
What cannot be expanded (a subgraph that contains itself, a link to a boundary slot that does not exist, a
definition without nodes) is a one-line ``WorkflowLoadError`` naming the node and the subgraph.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .errors import WorkflowLoadError

INPUT_NODE, OUTPUT_NODE = -10, -20
MAX_NESTING = 32


def _link_fields(link: Any) -> dict | None:
    if isinstance(link, Mapping):
        return {k: link.get(k) for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")}
    if isinstance(link, list) and len(link) >= 5:
        fields = list(link[:6]) + [None] * (6 - len(link[:6]))
        return dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), fields))
    return None  # the UI reader reports malformed records


def _definitions(data: Mapping) -> dict:
    subgraphs = (data.get("definitions") or {}).get("subgraphs") if isinstance(data.get("definitions"), Mapping) \
        else None
    if not isinstance(subgraphs, list):
        return {}
    return {s["id"]: s for s in subgraphs if isinstance(s, Mapping) and isinstance(s.get("id"), str)}


def _is_ref(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _instance_of(node: Any, defs: dict) -> bool:
    return isinstance(node, Mapping) and isinstance(node.get("type"), str) and node["type"] in defs


def expand_subgraphs(data: Mapping) -> Mapping:
    """``data`` with every subgraph instance replaced by its nodes (``data`` itself when there is none)."""
    defs = _definitions(data)
    nodes = data.get("nodes")
    if not defs or not isinstance(nodes, list) or not any(_instance_of(n, defs) for n in nodes):
        return data
    if not isinstance(data.get("links", []), list):
        return data  # the UI reader reports it
    out_nodes: list = []
    out_links: list = []
    _expand_level(nodes, data.get("links") or [], defs, "", out_nodes, out_links, chain=())
    expanded = {k: v for k, v in data.items() if k not in ("nodes", "links")}
    expanded["nodes"], expanded["links"] = out_nodes, out_links
    return expanded


def _expand_level(nodes: list, links: list, defs: dict, prefix: str, out_nodes: list, out_links: list,
                  chain: tuple, boundary_links: dict | None = None, where: str = "") -> None:
    """Copy one graph level into ``out_nodes``/``out_links`` with ids under ``prefix``.

    ``boundary_links`` (inside an instance): ``{("in", slot) or ("out", slot): [(link id, other end, its
    slot[, type])]}`` is filled with the links that start at the subgraph's input node or end at its output node.
    """
    def rid(value: Any) -> Any:
        return f"{prefix}{value}" if prefix and value is not None else value

    instances = {str(n.get("id")): n for n in nodes if _instance_of(n, defs)}
    for node in nodes:
        if not isinstance(node, Mapping) or str(node.get("id")) in instances:
            continue
        copied = copy.deepcopy(dict(node))
        copied["id"] = rid(node.get("id"))
        for inp in copied.get("inputs") if isinstance(copied.get("inputs"), list) else []:
            if isinstance(inp, dict):
                inp["link"] = rid(inp.get("link"))
        out_nodes.append(copied)
    for link in links:
        f = _link_fields(link)
        if f is None:
            out_links.append(copy.deepcopy(link))
            continue
        lid = rid(f["id"])
        origin, oslot, target, tslot = f["origin_id"], f["origin_slot"], f["target_id"], f["target_slot"]
        if boundary_links is not None and not all(_is_ref(v) for v in (f["id"], origin, oslot, target, tslot)):
            raise WorkflowLoadError(f"{where}: the link record {str(link)[:80]} inside is malformed (ids and slots "
                                    f"must be integers or strings); save the workflow again in ComfyUI")
        if str(origin) in instances:  # from an instance's output k: from its boundary reroute
            origin, oslot = f"{prefix}{origin}:out{oslot}", 0
        elif origin != INPUT_NODE:
            origin = rid(origin)
        if str(target) in instances:  # into an instance's input: into the boundary reroute of that input
            target, tslot = f"{prefix}{target}:in{_subgraph_input_index(instances[str(target)], defs, tslot)}", 0
        elif target != OUTPUT_NODE:
            target = rid(target)
        if boundary_links is not None and origin == INPUT_NODE and target == OUTPUT_NODE:  # input passed through
            boundary_links.setdefault(("out", tslot), []).append((lid, f"{prefix}in{oslot}", 0, f["type"]))
            boundary_links.setdefault(("in", oslot), [])
        elif boundary_links is not None and origin == INPUT_NODE:
            boundary_links.setdefault(("in", oslot), []).append((lid, target, tslot))
        elif boundary_links is not None and target == OUTPUT_NODE:
            boundary_links.setdefault(("out", tslot), []).append((lid, origin, oslot, f["type"]))
        else:
            out_links.append([lid, origin, oslot, target, tslot, f["type"]])
    for iid, inst in instances.items():
        _expand_instance(inst, defs, f"{prefix}{iid}", rid, out_nodes, out_links, chain)


def _expand_instance(inst: Mapping, defs: dict, full_id: str, rid, out_nodes: list, out_links: list,
                     chain: tuple) -> None:
    sub = defs[inst["type"]]
    name = sub.get("name") or sub["id"]
    where = f"node {full_id} (subgraph '{name}')"
    if sub["id"] in chain:
        raise WorkflowLoadError(f"{where} contains itself; a subgraph cannot hold an instance of itself")
    if len(chain) >= MAX_NESTING:
        raise WorkflowLoadError(f"{where} nests subgraphs more than {MAX_NESTING} deep")
    if not isinstance(sub.get("nodes"), list) or not isinstance(sub.get("links", []), list):
        raise WorkflowLoadError(f"{where}: its definition has no 'nodes' list (or 'links' is not a list); save "
                                f"the workflow again in ComfyUI")
    sub_inputs = sub.get("inputs") if isinstance(sub.get("inputs"), list) else []
    sub_outputs = sub.get("outputs") if isinstance(sub.get("outputs"), list) else []
    start = len(out_nodes)
    boundary: dict = {}
    _expand_level(sub["nodes"], sub.get("links") or [], defs, f"{full_id}:", out_nodes, out_links,
                  chain + (sub["id"],), boundary, where)
    mode = inst.get("mode", 0)
    if mode in (2, 4):  # a muted or bypassed instance mutes or bypasses everything inside
        for node in out_nodes[start:]:
            node["mode"] = mode

    for (side, slot), ends in boundary.items():
        count = len(sub_inputs) if side == "in" else len(sub_outputs)
        if not isinstance(slot, int) or not 0 <= slot < count:
            raise WorkflowLoadError(f"{where}: a link inside uses its {side}put slot {slot!r}, but the subgraph "
                                    f"has {count} {side}put(s); save the workflow again in ComfyUI")

    # Inputs: a reroute fed by the outer link, a primitive holding the instance's value, or no wire at all.
    inst_inputs = [i for i in inst.get("inputs") if isinstance(i, Mapping)] if isinstance(inst.get("inputs"), list) \
        else []
    values = _promoted_values(inst, inst_inputs)
    for j, spec in enumerate(sub_inputs):
        spec = spec if isinstance(spec, Mapping) else {}
        ends = boundary.get(("in", j), [])
        outer = next((i for i in inst_inputs if i.get("name") == spec.get("name")), None)
        outer_link = outer.get("link") if outer else None
        node_id = f"{full_id}:in{j}"
        if outer is not None and outer_link is None and isinstance(outer.get("name"), str) \
                and outer["name"] in values:
            out_nodes.append({"id": node_id, "type": "PrimitiveNode", "mode": 0, "inputs": [], "outputs": [],
                              "widgets_values": [values[outer["name"]]]})
        else:
            out_nodes.append({"id": node_id, "type": "Reroute", "mode": 0, "outputs": [],
                              "inputs": [{"name": "", "type": "*", "link": rid(outer_link)}]})
            if outer_link is None:  # unwired, no value: the inner nodes keep their own widget values
                _unlink(out_nodes, start, {lid for lid, _t, _s in ends})
                continue
        for lid, target, tslot in ends:
            out_links.append([lid, node_id, 0, target, tslot, spec.get("type")])
    # Outputs: a reroute fed by the inner link that ends at the output node.
    for k, _spec in enumerate(sub_outputs):
        ends = boundary.get(("out", k), [])
        link = ends[0][0] if ends else None
        out_nodes.append({"id": f"{full_id}:out{k}", "type": "Reroute", "mode": 0,
                          "inputs": [{"name": "", "type": "*", "link": link}], "outputs": []})
        for lid, origin, oslot, ltype in ends[:1]:
            out_links.append([lid, origin, oslot, f"{full_id}:out{k}", 0, ltype])


def _subgraph_input_index(inst: Mapping, defs: dict, slot: Any) -> Any:
    """The subgraph input that an instance's input slot stands for (matched by name; else the same index)."""
    inputs = inst.get("inputs") if isinstance(inst.get("inputs"), list) else []
    sub_inputs = defs[inst["type"]].get("inputs") if isinstance(defs[inst["type"]].get("inputs"), list) else []
    if isinstance(slot, int) and 0 <= slot < len(inputs) and isinstance(inputs[slot], Mapping):
        names = [s.get("name") if isinstance(s, Mapping) else None for s in sub_inputs]
        name = inputs[slot].get("name")
        if isinstance(name, str) and name in names:
            return names.index(name)
    return slot


def _promoted_values(inst: Mapping, inst_inputs: list) -> dict:
    """Values an instance holds for its widget inputs (``widgets_values`` in the order of those inputs)."""
    raw = inst.get("widgets_values")
    if not isinstance(raw, list):
        return {}
    names = [i.get("name") for i in inst_inputs if isinstance(i.get("widget"), Mapping) and isinstance(i.get("name"), str)]
    return {n: copy.deepcopy(v) for n, v in zip(names, raw)}


def _unlink(nodes: list, start: int, link_ids: set) -> None:
    for node in nodes[start:]:
        for inp in node.get("inputs") if isinstance(node.get("inputs"), list) else []:
            if isinstance(inp, dict) and _is_ref(inp.get("link")) and inp["link"] in link_ids:
                inp["link"] = None
