"""Subgraphs of newer ComfyUI saves (definitions.subgraphs) are expanded into their nodes, or named as unrunnable."""
from __future__ import annotations

import copy

import pytest

from kling_foley_core.runner import WorkflowLoadError, ui_to_api
from test_runner_nodes import NODE_CLASS_MAPPINGS as NODES

SUB = "5b3a0c1e-0000-4000-8000-000000000001"


def _link(lid, origin, oslot, target, tslot, type):
    return {"id": lid, "origin_id": origin, "origin_slot": oslot, "target_id": target, "target_slot": tslot,
            "type": type}


def encode_and_sample(sub_id=SUB, inner_extra=()):
    """A subgraph: model in, (prompt text widget promoted), TEncode → TSampler, latent out."""
    return {
        "id": sub_id, "name": "Encode and sample",
        "inputs": [{"id": "i0", "name": "model", "type": "T_MODEL", "linkIds": [101, 102]},
                   {"id": "i1", "name": "text", "type": "STRING", "linkIds": [105]}],
        "outputs": [{"id": "o0", "name": "latent", "type": "T_LATENT", "linkIds": [104]}],
        "inputNode": {"id": -10}, "outputNode": {"id": -20},
        "nodes": [
            {"id": 2, "type": "TEncode", "mode": 0, "widgets_values": ["inner text"],
             "inputs": [{"name": "model", "type": "T_MODEL", "link": 101},
                        {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 105}]},
            {"id": 3, "type": "TSampler", "mode": 0, "title": "Sampler", "widgets_values": [7, "fixed", 4, "euler", 1.5],
             "inputs": [{"name": "model", "type": "T_MODEL", "link": 102}, {"name": "cond", "type": "T_COND", "link": 103}]},
            *inner_extra,
        ],
        "links": [_link(101, -10, 0, 2, 0, "T_MODEL"), _link(102, -10, 0, 3, 0, "T_MODEL"),
                  _link(103, 2, 0, 3, 1, "T_COND"), _link(104, 3, 0, -20, 0, "T_LATENT"),
                  _link(105, -10, 1, 2, 1, "STRING")],
    }


def workflow(instance_widgets=None, text_link=None, mode=0):
    """loader(1) → [subgraph instance 12] → save(4)."""
    inst = {"id": 12, "type": SUB, "mode": mode,
            "inputs": [{"name": "model", "type": "T_MODEL", "link": 1},
                       {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": text_link}],
            "outputs": [{"name": "latent", "type": "T_LATENT", "links": [2]}]}
    if instance_widgets is not None:
        inst["widgets_values"] = instance_widgets
    return {
        "nodes": [{"id": 1, "type": "TLoader", "mode": 0, "widgets_values": ["small", 2.0]}, inst,
                  {"id": 4, "type": "TSave", "mode": 0, "widgets_values": ["foley/take"],
                   "inputs": [{"name": "latent", "type": "T_LATENT", "link": 2}]}],
        "links": [[1, 1, 0, 12, 0, "T_MODEL"], [2, 12, 0, 4, 0, "T_LATENT"]],
        "definitions": {"subgraphs": [encode_and_sample()]},
    }


def test_subgraph_instance_becomes_its_nodes_with_comfyui_execution_ids():
    api = ui_to_api(workflow(), NODES)
    assert set(api) == {"1", "12:2", "12:3", "4"}
    assert api["12:2"]["inputs"] == {"model": ["1", 0], "text": "inner text"}  # unwired input: inner widget value
    assert api["12:3"]["inputs"] == {"model": ["1", 0], "cond": ["12:2", 0], "seed": 7, "steps": 4,
                                     "sampler": "euler", "cfg": 1.5}
    assert api["12:3"]["_meta"] == {"title": "Sampler"}
    assert api["4"]["inputs"] == {"latent": ["12:3", 0], "filename_prefix": "foley/take"}


def test_a_promoted_widget_value_on_the_instance_reaches_the_inner_node():
    api = ui_to_api(workflow(instance_widgets=["rain on a roof"]), NODES)
    assert api["12:2"]["inputs"]["text"] == "rain on a roof"


def test_nested_subgraphs_expand_recursively():
    data = workflow()
    outer_id = "5b3a0c1e-0000-4000-8000-000000000002"
    inner = data["definitions"]["subgraphs"][0]
    outer = {"id": outer_id, "name": "Wrapper",
             "inputs": [{"name": "model", "type": "T_MODEL"}], "outputs": [{"name": "latent", "type": "T_LATENT"}],
             "nodes": [{"id": 7, "type": SUB, "mode": 0, "inputs": [{"name": "model", "type": "T_MODEL", "link": 201}],
                        "outputs": [{"name": "latent", "type": "T_LATENT", "links": [202]}]}],
             "links": [_link(201, -10, 0, 7, 0, "T_MODEL"), _link(202, 7, 0, -20, 0, "T_LATENT")]}
    data["definitions"]["subgraphs"] = [inner, outer]
    data["nodes"][1]["type"] = outer_id
    api = ui_to_api(data, NODES)
    assert set(api) == {"1", "12:7:2", "12:7:3", "4"}
    assert api["12:7:3"]["inputs"]["cond"] == ["12:7:2", 0] and api["4"]["inputs"]["latent"] == ["12:7:3", 0]
    assert api["12:7:2"]["inputs"]["model"] == ["1", 0]


def test_a_muted_instance_mutes_its_nodes():
    api = ui_to_api(workflow(mode=2), NODES)
    assert set(api) == {"1", "4"} and "latent" not in api["4"]["inputs"]


def test_a_subgraph_that_contains_itself_is_named():
    data = workflow()
    sub = data["definitions"]["subgraphs"][0]
    sub["nodes"].append({"id": 9, "type": SUB, "mode": 0, "inputs": [], "outputs": []})
    with pytest.raises(WorkflowLoadError, match=r"node 12:9 \(subgraph 'Encode and sample'\) contains itself"):
        ui_to_api(data, NODES)


def test_a_link_to_a_missing_boundary_slot_is_named():
    data = workflow()
    data["definitions"]["subgraphs"][0]["links"].append(_link(106, -10, 5, 3, 0, "T_MODEL"))
    with pytest.raises(WorkflowLoadError, match=r"node 12 \(subgraph 'Encode and sample'\).*input slot 5"):
        ui_to_api(data, NODES)


def test_a_definition_without_instances_changes_nothing():
    data = workflow()
    data["nodes"][1]["type"] = "TSampler"  # no instance left; the definition stays in the file
    plain = copy.deepcopy(data)
    del plain["definitions"]
    assert ui_to_api(data, NODES) == ui_to_api(plain, NODES)
