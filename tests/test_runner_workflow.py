"""UI → API conversion, format detection, workflow loading and --set overrides."""
from __future__ import annotations

import json

import pytest

from kling_foley_core.runner import (OverrideError, WorkflowLoadError, apply_overrides, detect_format,
                                     load_workflow, parse_override, ui_to_api)
from test_runner_nodes import NODE_CLASS_MAPPINGS as NODES


def _node(id, type, widgets=None, inputs=(), mode=0, title=None, outputs=()):
    n = {"id": id, "type": type, "mode": mode, "inputs": list(inputs), "outputs": list(outputs)}
    if widgets is not None:
        n["widgets_values"] = widgets
    if title:
        n["title"] = title
    return n


def _in(name, type, link=None, widget=False):
    d = {"name": name, "type": type, "link": link}
    if widget:
        d["widget"] = {"name": name}
    return d


def ui_graph():
    """loader(1) → reroute(5) → encode(2), sampler(3) with seed widget + control value, save(4)."""
    return {
        "last_node_id": 5, "last_link_id": 5,
        "nodes": [
            _node(1, "TLoader", ["small", 3.0], title="Model"),
            _node(5, "Reroute", None, [_in("", "*", 1)]),
            _node(2, "TEncode", ["rain on a roof"], [_in("model", "T_MODEL", 2)]),
            _node(3, "TSampler", [123, "randomize", 7, "heun", 2.5],
                  [_in("model", "T_MODEL", 3), _in("cond", "T_COND", 4)], title="Sampler"),
            _node(4, "TSave", ["foley/take"], [_in("latent", "T_LATENT", 5)]),
            _node(6, "Note", ["just a note"]),
        ],
        "links": [[1, 1, 0, 5, 0, "*"], [2, 5, 0, 2, 0, "T_MODEL"], [3, 1, 0, 3, 0, "T_MODEL"],
                  [4, 2, 0, 3, 1, "T_COND"], [5, 3, 0, 4, 0, "T_LATENT"]],
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


def test_ui_to_api_maps_widgets_in_declaration_order_and_skips_seed_control_value():
    api = ui_to_api(ui_graph(), NODES)
    assert set(api) == {"1", "2", "3", "4"}  # Reroute and Note are frontend-only
    assert api["1"] == {"class_type": "TLoader", "inputs": {"name": "small", "scale": 3.0}, "_meta": {"title": "Model"}}
    # "randomize" after the seed is the frontend's control_after_generate value, not 'steps'
    assert api["3"]["inputs"] == {"model": ["1", 0], "cond": ["2", 0], "seed": 123, "steps": 7, "sampler": "heun",
                                  "cfg": 2.5}
    assert api["2"]["inputs"] == {"model": ["1", 0], "text": "rain on a roof"}  # reroute resolved to its source
    assert api["4"]["inputs"] == {"latent": ["3", 0], "filename_prefix": "foley/take"}


def test_ui_seed_without_control_value_in_older_saves():
    g = ui_graph()
    g["nodes"][3]["widgets_values"] = [123, 7, "heun", 2.5]  # no control value saved
    assert ui_to_api(g, NODES)["3"]["inputs"]["steps"] == 7


def test_control_after_generate_option_overrides_the_name_rule_and_combo_gets_two_extras():
    g = {"nodes": [_node(1, "TNoSeedInt", [5, 9, "fixed", "b", "fixed", "", "hello"])], "links": []}
    # seed: control explicitly off (no extra); count: explicitly on (one extra);
    # mode COMBO with control: control value + filter-list string
    assert ui_to_api(g, NODES)["1"]["inputs"] == {"seed": 5, "count": 9, "mode": "b", "label": "hello"}


def test_upload_widget_value_and_force_input_are_skipped():
    g = {"nodes": [_node(1, "TUpload", ["b.mp4", "video", 25.0])], "links": []}
    assert ui_to_api(g, NODES)["1"]["inputs"] == {"video": "b.mp4", "fps": 25.0}
    g = {"nodes": [_node(1, "TUpload", ["b.mp4", 25.0])], "links": []}  # saves without the upload value
    assert ui_to_api(g, NODES)["1"]["inputs"] == {"video": "b.mp4", "fps": 25.0}


def test_widget_converted_to_input_keeps_its_slot_and_the_link_wins():
    g = ui_graph()
    g["nodes"].append(_node(7, "PrimitiveNode", [999, "fixed"], outputs=[{"name": "INT", "type": "INT", "links": [6]}]))
    g["nodes"][3]["inputs"].append(_in("seed", "INT", 6, widget=True))
    g["links"].append([6, 7, 0, 3, 2, "INT"])
    api = ui_to_api(g, NODES)
    assert api["3"]["inputs"]["seed"] == 999  # the primitive's value, not the stale widget value 123
    assert api["3"]["inputs"]["steps"] == 7  # later widgets are still aligned
    assert "7" not in api


def test_new_frontend_widget_inputs_without_links_keep_widget_values():
    g = ui_graph()
    g["nodes"][3]["inputs"] += [_in("seed", "INT", None, widget=True), _in("steps", "INT", None, widget=True)]
    assert ui_to_api(g, NODES)["3"]["inputs"]["seed"] == 123


def test_bypassed_node_is_rewired_to_its_input_of_the_same_type():
    g = ui_graph()
    # insert a bypassed TEncode-like pass-through? use TAny: anything(*) , either(T_COND,T_LATENT) → T_LATENT
    g["nodes"].append(_node(8, "TAny", [], [_in("anything", "*", None), _in("either", "T_LATENT", 7)], mode=4))
    g["links"] = [lk for lk in g["links"] if lk[0] != 5] + [[7, 3, 0, 8, 1, "T_LATENT"], [8, 8, 0, 4, 0, "T_LATENT"]]
    g["nodes"][4]["inputs"] = [_in("latent", "T_LATENT", 8)]
    api = ui_to_api(g, NODES)
    assert "8" not in api
    assert api["4"]["inputs"]["latent"] == ["3", 0]  # through the bypassed node to the sampler


def test_muted_node_is_dropped_with_the_inputs_pointing_at_it():
    g = ui_graph()
    g["nodes"][2]["mode"] = 2  # mute the encoder
    api = ui_to_api(g, NODES)
    assert "2" not in api
    assert "cond" not in api["3"]["inputs"]  # validation will then report it missing


def test_unknown_ui_node_is_kept_for_validation():
    g = ui_graph()
    g["nodes"].append(_node(11, "SomethingElse", [1, 2]))
    assert ui_to_api(g, NODES)["11"] == {"class_type": "SomethingElse", "inputs": {}}


def test_subgraph_is_reported_as_unsupported():
    g = ui_graph()
    g["definitions"] = {"subgraphs": [{"id": "abc-123"}]}
    g["nodes"].append(_node(12, "abc-123", []))
    with pytest.raises(WorkflowLoadError, match="subgraph"):
        ui_to_api(g, NODES)


def test_dict_widgets_values():
    g = {"nodes": [_node(1, "TLoader", {"name": "small", "scale": 4.0})], "links": []}
    assert ui_to_api(g, NODES)["1"]["inputs"] == {"name": "small", "scale": 4.0}


def test_detect_format_and_load(tmp_path):
    assert detect_format(ui_graph()) == "ui"
    assert detect_format({"1": {"class_type": "X", "inputs": {}}}) == "api"
    with pytest.raises(WorkflowLoadError, match="neither"):
        detect_format({"foo": 1})
    p = tmp_path / "wf.json"
    p.write_text(json.dumps({"prompt": {"4": {"class_type": "TLoader", "inputs": {"name": "tiny", "scale": 1}}}}))
    assert load_workflow(p, NODES) == {"4": {"class_type": "TLoader", "inputs": {"name": "tiny", "scale": 1}}}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WorkflowLoadError, match=r"bad.json is not valid JSON.*line 1"):
        load_workflow(bad, NODES)
    with pytest.raises(WorkflowLoadError, match="does not exist"):
        load_workflow(tmp_path / "missing.json", NODES)


def test_api_links_are_normalised_to_string_ids():
    api = load_workflow({1: {"class_type": "TEncode", "inputs": {"model": [7, 0.0], "text": "x"}}}, NODES)
    assert api == {"1": {"class_type": "TEncode", "inputs": {"model": ["7", 0], "text": "x"}}}


# ------------------------------------------------------------------------------------------------ overrides
def test_parse_override_values():
    assert parse_override("3.seed=42").value == 42
    assert parse_override("3.cfg=4.5").value == 4.5
    assert parse_override("3.flag=true").value is True
    assert parse_override("12.video=clips/dog.mp4").value == "clips/dog.mp4"  # not JSON → string
    assert parse_override('3.text="a=b"').value == "a=b"
    ov = parse_override("My v1.2 Node.steps=5")  # title with dots: split at the last dot before '='
    assert (ov.node, ov.input) == ("My v1.2 Node", "steps")
    with pytest.raises(OverrideError, match="NODE.input=value"):
        parse_override("seed=3")


def test_apply_overrides_by_id_title_and_class():
    api = ui_to_api(ui_graph(), NODES)
    apply_overrides(api, ["3.seed=7", "Model.name=tiny", "TEncode.text=thunder"], NODES)
    assert api["3"]["inputs"]["seed"] == 7
    assert api["1"]["inputs"]["name"] == "tiny"
    assert api["2"]["inputs"]["text"] == "thunder"


def test_override_errors_name_the_problem():
    api = ui_to_api(ui_graph(), NODES)
    api["9"] = {"class_type": "TLoader", "inputs": {"name": "tiny", "scale": 1.0}}
    with pytest.raises(OverrideError, match=r"class 'TLoader' names 2 nodes \(1, 9\)"):
        apply_overrides(api, ["TLoader.scale=2"], NODES)
    with pytest.raises(OverrideError, match="no node with id, title or class_type 'Nope'"):
        apply_overrides(api, ["Nope.scale=2"], NODES)
    with pytest.raises(OverrideError, match=r"has no input 'sede'; its inputs are: model, cond, seed"):
        apply_overrides(api, ["3.sede=2"], NODES)


class KSamplerLike:
    """Same widget layout as ComfyUI's KSampler (seed, control, steps, cfg, sampler_name, scheduler, denoise)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "seed": ("INT", {"default": 0, "min": 0, "max": 2**64 - 1}),
                             "steps": ("INT", {"default": 20}), "cfg": ("FLOAT", {"default": 8.0}),
                             "sampler_name": (["euler", "dpmpp_2m"],), "scheduler": (["normal", "karras"],),
                             "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "latent_image": ("LATENT",), "denoise": ("FLOAT", {"default": 1.0})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "f"


class SaveLike:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "f"


@pytest.mark.parametrize("control", [True, "randomize", "fixed"])
def test_ksampler_layout_with_boolean_or_string_control_value_and_defaults_for_missing_widgets(control):
    g = {"nodes": [_node(3, "KSamplerLike", [156680208700286, control, 20, 8, "euler", "normal", 1],
                         [_in("model", "MODEL", None), _in("positive", "CONDITIONING", None)]),
                   _node(9, "SaveLike", None, [_in("images", "IMAGE", None)])],  # saved without widgets_values
         "links": []}
    api = ui_to_api(g, {"KSamplerLike": KSamplerLike, "SaveLike": SaveLike})
    assert api["3"]["inputs"] == {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler",
                                  "scheduler": "normal", "denoise": 1}
    assert api["9"]["inputs"] == {"filename_prefix": "ComfyUI"}


# ------------------------------------------------------------------------------------------------ hostile files
from kling_foley_core.runner.workflow import parse_workflow_text  # noqa: E402


@pytest.mark.parametrize("data,needle", [
    ({"1": {"class_type": "TSave", "inputs": 5}}, "'inputs' must be an object"),
    ({"nodes": ["x"], "links": []}, r"nodes\[0\] is a string"),
    ({"nodes": [{"id": [1], "type": "TSave"}]}, r"nodes\[0\] has no usable id"),
    ({"nodes": [{"id": 1, "type": ["TSave"]}]}, "'type' must be a node class name"),
    ({"nodes": [{"id": 1, "type": "TSave", "inputs": 5}]}, "'inputs' must be a list"),
    ({"nodes": [{"id": 1, "type": "TSave", "inputs": [{"name": "latent", "link": [1]}]}]}, "not a link id"),
    ({"nodes": [{"id": 1, "type": "TSave", "widgets_values": 3}]}, "widgets_values must be a list"),
    ({"nodes": [{"id": 1, "type": "TSave"}], "links": 5}, "'links' must be a list"),
    ({"nodes": [{"id": 1, "type": "TSave"}], "links": [[1, 2, 1e999, 1, 0, "T"]]}, r"links\[0\] is malformed"),
    ({"nodes": [{"id": 1, "type": "TSave"}], "links": [[1, 2, "0", 1, 0, "T"]]}, r"links\[0\] is malformed"),
    ({"nodes": [{"id": 1, "type": "TSave"}, {"id": 1, "type": "TLoader"}]}, "node 1 is given twice"),
])
def test_malformed_workflows_are_one_line_load_errors(data, needle):
    with pytest.raises(WorkflowLoadError, match=needle) as exc:
        load_workflow(data, NODES)
    assert "\n" not in str(exc.value)


def test_duplicate_keys_in_the_file_are_reported_not_last_one_wins(tmp_path):
    p = tmp_path / "dup.json"
    p.write_text('{"1": {"class_type": "TLoader", "inputs": {}}, "1": {"class_type": "TSave", "inputs": {}}}')
    with pytest.raises(WorkflowLoadError, match=r"dup.json gives the key '1' twice"):
        load_workflow(p, NODES)


@pytest.mark.parametrize("text,needle", [
    ("[" * 200_000 + "]" * 200_000, "too deeply"),
    ('{"1": ' + "[" * 150 + "]" * 150 + "}", "more than 100 levels"),
    ('{"1": {"class_type": "TSave", "inputs": {"x": ' + "9" * 5000 + "}}}", "not a usable JSON workflow"),
    ("[1, 2]", "must hold a JSON object, got a list"),
])
def test_hostile_json_text_is_a_load_error(text, needle):
    with pytest.raises(WorkflowLoadError, match=needle):
        parse_workflow_text(text, "workflow file x.json")


def test_a_workflow_dict_that_contains_itself_is_refused():
    wf = {"1": {"class_type": "TSave", "inputs": {}}}
    wf["1"]["inputs"]["loop"] = wf
    with pytest.raises(WorkflowLoadError, match="contains itself"):
        load_workflow(wf, NODES)


@pytest.mark.parametrize("depth", [150, 100_000])
def test_override_value_nested_too_deeply_is_an_override_error(depth):
    with pytest.raises(OverrideError, match="too deeply|levels deep"):
        parse_override("3.seed=" + "[" * depth + "]" * depth)
