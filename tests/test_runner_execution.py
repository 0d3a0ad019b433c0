"""Execution: order, only-needed nodes, output cache, IS_CHANGED, lists, interrupts, progress, node errors."""
from __future__ import annotations

import threading

import pytest

from kling_foley_core.runner import (NodeExecutionError, ProcessingInterrupted, WorkflowRunner, interrupt, paths,
                                     topological_order)
from test_runner_nodes import CALLS, NODE_CLASS_MAPPINGS as NODES, TSampler, TVolatile, api_workflow


@pytest.fixture(autouse=True)
def _isolated(tmp_path):
    CALLS.clear()
    paths.set_output_directory(tmp_path)
    yield
    paths.set_output_directory(None)


def test_runs_only_needed_nodes_in_dependency_order(tmp_path):
    res = WorkflowRunner(NODES).run(api_workflow())
    assert res.executed == ["1", "2", "3", "4"]  # the dangling loader 9 never runs
    assert CALLS["TLoader"] == 1
    # seed 1 + 3 steps of cond*cfg, cond = len("dog barks") * scale 2.0 = 18
    assert (tmp_path / "run" / "out_00001.txt").read_text() == '[82.0, "euler"]\n'
    assert res.saved_files() == [{"filename": "out_00001.txt", "subfolder": "run", "type": "output"}]


def test_topological_order_is_deterministic():
    wf = api_workflow()
    assert topological_order(wf, ["4", "3", "2", "1"]) == ["1", "2", "3", "4"]


def test_changing_only_the_seed_reuses_upstream_outputs():
    runner = WorkflowRunner(NODES)
    runner.run(api_workflow())
    res = runner.run(api_workflow(), overrides=["Sampler.seed=2"])
    assert CALLS == {"TLoader": 1, "TEncode": 1, "TSampler": 2, "TSave": 2}
    assert res.cached == ["1", "2"] and res.executed == ["3", "4"]
    # changing the text re-runs the encoder but not the loader
    runner.run(api_workflow(), overrides=["TEncode.text=cat meows"])
    assert CALLS["TLoader"] == 1 and CALLS["TEncode"] == 2 and CALLS["TSampler"] == 3


def test_unchanged_workflow_is_fully_cached_and_cache_can_be_disabled():
    runner = WorkflowRunner(NODES)
    runner.run(api_workflow())
    res = runner.run(api_workflow())
    assert res.executed == [] and CALLS["TSave"] == 1  # like ComfyUI: nothing changed, nothing re-runs
    WorkflowRunner(NODES, cache=False).run(api_workflow())
    assert CALLS["TLoader"] == 2


def test_cache_is_bounded_to_the_last_run_by_default():
    runner = WorkflowRunner(NODES)
    runner.run(api_workflow())
    n = len(runner.cache)
    for seed in range(5):
        runner.run(api_workflow(), overrides=[f"3.seed={seed + 10}"])
    assert len(runner.cache) == n  # old sampler/save entries are dropped
    runner.run(api_workflow(), overrides=["3.seed=10"])  # seed 10 was evicted → runs again
    assert CALLS["TSampler"] == 7


def test_is_changed_controls_caching(monkeypatch):
    runner = WorkflowRunner(NODES)
    wf = {"1": {"class_type": "TVolatile", "inputs": {"path": "a"}},
          "2": {"class_type": "TCollect", "inputs": {"xs": ["1", 0], "tag": "t"}}}
    runner.run(wf)
    runner.run(wf)
    assert CALLS["TVolatile"] == 1
    monkeypatch.setattr(TVolatile, "VERSION", 1)  # e.g. the file on disk changed
    runner.run(wf)
    assert CALLS["TVolatile"] == 2 and CALLS["TCollect"] == 2  # downstream follows
    wf["1"]["inputs"]["path"] = "always"  # IS_CHANGED → NaN: always re-run
    runner.run(wf)
    runner.run(wf)
    assert CALLS["TVolatile"] == 4


def test_output_is_list_maps_downstream_and_input_is_list_collects():
    wf = {"1": {"class_type": "TListOut", "inputs": {"n": 3}},
          "2": {"class_type": "TDouble", "inputs": {"x": ["1", 0]}},
          "3": {"class_type": "TCollect", "inputs": {"xs": ["2", 0], "tag": "doubled"}}}
    res = WorkflowRunner(NODES).run(wf)
    assert CALLS["TDouble"] == 3 and CALLS["TCollect"] == 1  # one call per list item, one collecting call
    assert res.outputs["2"] == [[0, 2, 4]]
    assert res.ui["3"] == {"values": [[0, 2, 4], ["doubled"]]}
    assert res.output("2") == [0, 2, 4]


def test_progress_hook_and_events():
    seen, events = [], []
    WorkflowRunner(NODES).run(api_workflow(), progress=lambda nid, v, t: seen.append((nid, v, t)),
                              on_event=lambda name, d: events.append((name, d["node"])))
    assert seen == [("3", 1, 3), ("3", 2, 3), ("3", 3, 3)]
    assert ("executing", "3") in events and ("executed", "4") in events


def test_interrupt_during_sampling_stops_before_saving(tmp_path):
    def hook(nid, v, total):
        if v == 2:
            interrupt()  # e.g. Ctrl-C or another thread

    with pytest.raises(ProcessingInterrupted, match="node 3"):
        WorkflowRunner(NODES).run(api_workflow(), progress=hook)
    assert CALLS["TSave"] == 0
    assert not list(tmp_path.rglob("*.txt"))


def test_interrupt_inside_a_save_leaves_no_partial_file(tmp_path, monkeypatch):
    import test_runner_nodes as T

    real = T.check_interrupt

    def interrupt_in_save():
        if T.CALLS["TSave"]:  # only once the save node is writing
            interrupt()
        real()

    monkeypatch.setattr(T, "check_interrupt", interrupt_in_save)
    with pytest.raises(ProcessingInterrupted):
        WorkflowRunner(NODES).run(api_workflow())
    assert CALLS["TSave"] == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no half-written file, no temp file


def test_interrupt_from_another_thread_is_cleared_for_the_next_run():
    interrupt()
    res = WorkflowRunner(NODES).run(api_workflow())  # a new run starts clean
    assert res.executed

    done = threading.Event()

    def slow_sample(self, model, cond, seed, steps, sampler, cfg=4.5):
        done.set()
        from kling_foley_core.runner import check_interrupt
        import time
        for _ in range(200):
            time.sleep(0.005)
            check_interrupt()
        return ([0.0, sampler],)

    TSampler_sample = TSampler.sample
    TSampler.sample = slow_sample
    try:
        t = threading.Thread(target=lambda: (done.wait(2), interrupt()))
        t.start()
        with pytest.raises(ProcessingInterrupted):
            WorkflowRunner(NODES).run(api_workflow(), overrides=["3.seed=99"])
        t.join()
    finally:
        TSampler.sample = TSampler_sample


def test_node_errors_are_wrapped_with_node_id():
    wf = api_workflow()
    wf["5"] = {"class_type": "TFail", "inputs": {"x": ["2", 0], "how": "value"}}
    with pytest.raises(NodeExecutionError) as exc:
        WorkflowRunner(NODES).run(wf, outputs=["5"])
    assert exc.value.is_user_error and exc.value.node_id == "5"
    assert "node 5 (TFail) failed: ValueError: TFail: 'how' was set" in str(exc.value)
    wf["5"]["inputs"]["how"] = "runtime"
    with pytest.raises(NodeExecutionError) as exc:
        WorkflowRunner(NODES).run(wf, outputs=["5"])
    assert not exc.value.is_user_error and isinstance(exc.value.__cause__, RuntimeError)


def test_ui_format_runs_end_to_end(tmp_path):
    from test_runner_workflow import ui_graph

    res = WorkflowRunner(NODES).run(ui_graph())
    assert res.executed == ["1", "2", "3", "4"]
    assert (tmp_path / "foley" / "take_00001.txt").exists()


def test_nodes_run_under_inference_mode():
    import torch

    seen = {}

    class TGrad:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "f"

        def f(self):
            seen["inference"] = torch.is_inference_mode_enabled()
            return {}

    WorkflowRunner({"TGrad": TGrad}).run({"1": {"class_type": "TGrad", "inputs": {}}})
    assert seen["inference"] is True
