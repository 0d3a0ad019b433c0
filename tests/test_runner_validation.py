"""Every validation error kind, collected and raised together before anything runs."""
from __future__ import annotations

import pytest

from kling_foley_core.runner import WorkflowRunner, WorkflowValidationError, collect_errors, validate_prompt
from test_runner_nodes import CALLS, NODE_CLASS_MAPPINGS as NODES, api_workflow


def kinds(prompt) -> list[tuple[str, str, str | None]]:
    return [(e.node_id, e.kind, e.input_name) for e in collect_errors(prompt, NODES)]


def test_valid_workflow_has_no_errors_and_coerces_values():
    wf = api_workflow()
    wf["3"]["inputs"]["seed"] = "17"  # ComfyUI accepts numeric strings for INT
    wf["3"]["inputs"]["cfg"] = 2  # and ints for FLOAT
    out = validate_prompt(wf, NODES)
    assert out["3"]["inputs"]["seed"] == 17 and isinstance(out["3"]["inputs"]["cfg"], float)


def test_unknown_node_type_suggests_close_names():
    wf = api_workflow()
    wf["5"] = {"class_type": "TSamplr", "inputs": {}}
    errs = collect_errors(wf, NODES)
    assert [(e.node_id, e.kind) for e in errs] == [("5", "unknown_node_type")]
    assert "did you mean TSampler" in errs[0].message


def test_missing_required_input_but_optional_may_be_absent():
    wf = api_workflow()
    del wf["3"]["inputs"]["steps"]
    del wf["3"]["inputs"]["cfg"]  # optional
    assert kinds(wf) == [("3", "required_input_missing", "steps")]


def test_link_to_missing_node_and_out_of_range_slot_and_bad_link():
    wf = api_workflow()
    wf["2"]["inputs"]["model"] = ["77", 0]
    wf["3"]["inputs"]["cond"] = ["2", 3]
    wf["3"]["inputs"]["cfg"] = ["1", 0, 1]
    assert sorted(kinds(wf)) == sorted([("2", "linked_node_missing", "model"),
                                        ("3", "output_index_out_of_range", "cond"),
                                        ("3", "bad_linked_input", "cfg")])


def test_type_mismatch_any_and_union_types():
    wf = api_workflow()
    wf["3"]["inputs"]["cond"] = ["1", 0]  # T_MODEL into T_COND
    errs = collect_errors(wf, NODES)
    assert [(e.node_id, e.kind, e.input_name) for e in errs] == [("3", "return_type_mismatch", "cond")]
    assert "T_MODEL" in errs[0].message and "T_COND" in errs[0].message
    # '*' accepts anything; "T_COND,T_LATENT" accepts either member
    wf = api_workflow()
    wf["5"] = {"class_type": "TAny", "inputs": {"anything": ["1", 0], "either": ["2", 0]}}
    wf["4"]["inputs"]["latent"] = ["5", 0]
    assert kinds(wf) == []
    wf["5"]["inputs"]["either"] = ["1", 0]  # T_MODEL is in neither
    assert kinds(wf) == [("5", "return_type_mismatch", "either")]


def test_cycle_is_reported():
    wf = api_workflow()
    wf["5"] = {"class_type": "TDouble", "inputs": {"x": ["6", 0]}}
    wf["6"] = {"class_type": "TDouble", "inputs": {"x": ["5", 0]}}
    wf["7"] = {"class_type": "TCollect", "inputs": {"xs": ["6", 0], "tag": "t"}}
    errs = collect_errors(wf, NODES)
    assert [e.kind for e in errs] == ["dependency_cycle"]
    assert "5 -> 6 -> 5" in errs[0].message or "6 -> 5 -> 6" in errs[0].message


def test_int_float_ranges():
    wf = api_workflow()
    wf["3"]["inputs"]["steps"] = 0
    wf["3"]["inputs"]["cfg"] = 25.0
    wf["1"]["inputs"]["scale"] = -1
    assert sorted(kinds(wf)) == [("1", "value_smaller_than_min", "scale"), ("3", "value_bigger_than_max", "cfg"),
                                 ("3", "value_smaller_than_min", "steps")]


def test_combo_not_in_list_suggests_value():
    wf = api_workflow()
    wf["3"]["inputs"]["sampler"] = "eular"
    errs = collect_errors(wf, NODES)
    assert [(e.kind, e.input_name) for e in errs] == [("value_not_in_list", "sampler")]
    assert "'eular' is not one of: 'euler', 'heun'; did you mean 'euler'?" in errs[0].message


@pytest.mark.parametrize("name,value", [("seed", "abc"), ("seed", 1.5), ("seed", True), ("cfg", "x"), ("cfg", [1])])
def test_wrong_primitive_types(name, value):
    wf = api_workflow()
    wf["3"]["inputs"][name] = value
    assert [(k, i) for _, k, i in kinds(wf)] == [
        ("bad_linked_input" if isinstance(value, list) else "invalid_input_type", name)]


def test_string_input_given_an_object():
    wf = api_workflow()
    wf["2"]["inputs"]["text"] = {"a": 1}
    assert kinds(wf) == [("2", "invalid_input_type", "text")]


def test_validate_inputs_hook_and_it_replaces_builtin_range_checks():
    wf = api_workflow()
    wf["5"] = {"class_type": "TValidated", "inputs": {"latent": ["3", 0], "word": "bad", "level": 9}}
    errs = collect_errors(wf, NODES)
    # 'level' is out of its declared max, but VALIDATE_INPUTS takes 'level', so ComfyUI leaves it to the hook
    assert [(e.node_id, e.kind) for e in errs] == [("5", "custom_validation_failed")]
    assert "word must not be 'bad'" in errs[0].message


def test_no_output_node():
    wf = {"1": {"class_type": "TLoader", "inputs": {"name": "tiny", "scale": 1.0}}}
    assert kinds(wf) == [("(prompt)", "prompt_no_outputs", None)]


def test_only_nodes_feeding_outputs_are_checked_but_unknown_types_everywhere():
    wf = api_workflow()
    wf["9"]["inputs"]["name"] = "huge"  # unconnected node: ComfyUI ignores it too
    wf["10"] = {"class_type": "Nope", "inputs": {}}
    assert kinds(wf) == [("10", "unknown_node_type", None)]


def test_all_errors_raised_together_before_any_node_runs():
    CALLS.clear()
    wf = api_workflow()
    wf["3"]["inputs"]["steps"] = 1000
    wf["3"]["inputs"]["sampler"] = "dpm"
    del wf["2"]["inputs"]["text"]
    with pytest.raises(WorkflowValidationError) as exc:
        WorkflowRunner(NODES).run(wf)
    assert not CALLS  # nothing executed
    msg = str(exc.value)
    assert msg.startswith("workflow failed validation (3 errors):")
    assert "node 3 (TSampler) input 'steps': value 1000 is bigger than the maximum 100" in msg
    assert "node 2 (TEncode) input 'text': required input is missing" in msg
    assert len(msg.splitlines()) == 4  # one readable line per error
    ne = exc.value.node_errors()
    assert ne["3"]["class_type"] == "TSampler" and len(ne["3"]["errors"]) == 2
    assert {e["type"] for e in ne["3"]["errors"]} == {"value_bigger_than_max", "value_not_in_list"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "Infinity", 10 ** 400])
def test_non_finite_numbers_fail_the_range_check_instead_of_passing_it(value):
    wf = api_workflow()
    wf["3"]["inputs"]["cfg"] = value  # NaN compares False with min and max, so it used to pass and run
    errs = collect_errors(wf, NODES)
    assert [(e.node_id, e.kind, e.input_name) for e in errs] == [("3", "invalid_input_type", "cfg")]
    assert "finite number" in errs[0].message and "\n" not in str(errs[0])


def test_nan_from_a_set_override_is_rejected_naming_the_input():
    with pytest.raises(WorkflowValidationError, match=r"node 3 \(TSampler\) input 'cfg': expected a finite number"):
        WorkflowRunner(NODES).prepare(api_workflow(), ["Sampler.cfg=NaN"])


@pytest.mark.parametrize("class_type", [["TSave"], {"a": 1}, 5])
def test_class_type_that_is_not_a_string_is_a_validation_error(class_type):
    wf = api_workflow()
    wf["4"]["class_type"] = class_type  # was: TypeError: unhashable type
    errs = collect_errors(wf, NODES)
    assert ("4", "invalid_prompt") in [(e.node_id, e.kind) for e in errs]
    assert "class_type must be a node class name" in str(errs[0]) + str(errs[-1])


@pytest.mark.parametrize("link", [["2", "0"], ["2", float("inf")], ["2", 0.5], [["2"], 0]])
def test_malformed_link_slots_are_bad_linked_inputs(link):
    wf = api_workflow()
    wf["3"]["inputs"]["cond"] = link
    assert kinds(wf) == [("3", "bad_linked_input", "cond")]
