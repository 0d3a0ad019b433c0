"""Mutated workflows never escape the loader and validator: each ends valid or as one WorkflowError.

The seeds are the shipped ``workflows/*.json`` in both formats: each file as it is (API or UI format) and
converted to the other format, so both loaders are fuzzed whichever format the folder holds. A case applies one
to four random mutations (a value replaced by a hostile one such as ``NaN``, ``1e999``, ``[]``, ``["1", "0"]``
or a 5000-digit number; a key deleted, renamed or added; a list element dropped or duplicated; a node's type
swapped) and some cases are damaged as text (a node id written twice, ``[`` nested 200,000 deep, cut short).
Only loading, ``--set`` overrides, validation and the CLI's up-front checks run: no node function, no model.

    python tests/test_workflow_fuzz.py --cases 100000 [--seed 0]    # the long run; prints the escape count
"""
from __future__ import annotations

import copy
import json
import math
import random
import sys
import traceback
from pathlib import Path

from kling_foley_core.preflight import check_prompt
from kling_foley_core.runner import WorkflowError, apply_overrides, collect_errors, load_workflow
from kling_foley_core.runner.nodeinfo import input_specs
from kling_foley_core.runner.workflow import parse_workflow_text

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
DEEP = "\x00deep\x00"  # placeholder replaced by deeply nested brackets in the JSON text
DEEP_JSON = json.dumps(DEEP)
BIG_JSON = json.dumps("\x00big\x00")  # placeholder for a 5000-digit number (more than int() reads by default)

HOSTILE = [None, True, False, 0, 1, -1, 0.5, 2 ** 63, -(2 ** 70), math.inf, -math.inf, math.nan, 1e308, "", "x",
           "1", "0", "nan", "inf", "-1", "fixed", "KlingFoleyMuxVideo", "Reroute", "PrimitiveNode", "a\x00b.mp4", "/", __file__, [], {}, [[]],
           ["x"], ["1"], ["1", 0], ["1", "0"], ["1", math.inf], ["1", 0.5], ["1", -1], ["1", 99], [None, 0],
           [True, 0], [1, 0, 1], [[1], 0], [{"a": 1}, 0], {"a": 1}, {"__value__": [1]}, {"class_type": "x"},
           {"id": 1}, [1, 1, 0, 1, 0, "X"], [1, "a", None, 1, 0], 5, "\x00", "é" * 3, json.loads(BIG_JSON), DEEP]


def api_to_ui(prompt: dict, classes: dict) -> dict:
    """An API-format prompt as a UI (litegraph) save: widgets in declaration order, links by id."""
    nodes, links = [], []
    for k, (nid, entry) in enumerate(prompt.items()):
        cls = classes.get(entry.get("class_type"))
        specs = [s for s in input_specs(cls) if s.category != "hidden"] if cls else []
        inputs, widgets = [], []
        for s in specs:
            value = entry["inputs"].get(s.name)
            if isinstance(value, list) and len(value) == 2:
                links.append([len(links) + 1, int(value[0]), int(value[1]), int(nid), len(inputs), s.type])
                inputs.append({"name": s.name, "type": s.type, "link": len(links)})
            if s.is_widget:
                widgets.append(None if isinstance(value, list) else s.options.get("default") if value is None
                               else value)
                widgets.extend(["fixed"] * s.control_widgets)
        node = {"id": int(nid), "type": entry["class_type"], "mode": 0, "pos": [k * 300, 0], "inputs": inputs,
                "outputs": [], "widgets_values": widgets}
        if (entry.get("_meta") or {}).get("title"):
            node["title"] = entry["_meta"]["title"]
        nodes.append(node)
    return {"last_node_id": max((n["id"] for n in nodes), default=0), "last_link_id": len(links),
            "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def seeds(classes: dict) -> list[dict]:
    """Every shipped workflow in API and UI format, plus a UI save with a subgraph (the runner expands those)."""
    from test_runner_subgraphs import workflow as subgraph_workflow

    out = []
    for path in sorted(WORKFLOWS.glob("*.json")):
        data = json.loads(path.read_text())
        api = load_workflow(data, classes)
        out.append(data)
        out.append(api if isinstance(data.get("nodes"), list) else api_to_ui(api, classes))
    return out + [subgraph_workflow()]


def _pick(tree, rng: random.Random) -> tuple:
    """(container, key) of a random value: a random walk down from the root that stops at each level with
    probability 1/4 (so top-level keys, nodes, inputs and single values all get hit)."""
    parent, key, node = None, None, tree
    while isinstance(node, (dict, list)) and node and (parent is None or rng.random() < 0.75):
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        parent, node = node, node[key]
    return parent, key


def mutate(tree, rng: random.Random, classes: list[str]) -> None:
    parent, key = _pick(tree, rng)
    if parent is None:
        return
    op = rng.randrange(8)
    if op <= 2:
        parent[key] = copy.deepcopy(rng.choice(HOSTILE))
    elif op == 3:
        del parent[key]
    elif op == 4 and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif op == 4:
        parent[rng.choice(["inputs", "class_type", "type", "id", "link", "links", "nodes", "widgets_values",
                           "mode", "_meta", "prompt", "definitions", "extra", "name", "title"])] = \
            copy.deepcopy(rng.choice(HOSTILE))
    elif op == 5 and isinstance(parent, dict):
        parent[rng.choice(HOSTILE[13:22])] = parent.pop(key)
    elif op == 6:
        parent[key] = rng.choice(classes)
    else:
        value = parent[key]
        parent[key] = [value] if rng.random() < 0.5 else (list(value.values()) if isinstance(value, dict) else {"v": value})


def damage_text(text: str, rng: random.Random) -> str:
    op = rng.randrange(4)
    if op == 0 and text.startswith("{") and len(text) > 2:  # a top-level key written twice
        body = text[1:-1]
        first = body.split(', "', 1)[0]
        return "{" + first + ", " + body + "}"
    if op == 1:
        n = rng.choice([100, 1000, 5000, 200_000])
        return text.replace(DEEP_JSON, "[" * n + "]" * n, 1) if DEEP_JSON in text else "[" * n + "]" * n
    if op == 2:
        return text[: rng.randrange(len(text) + 1)]
    return text.replace("0", "NaN", 1)


def make_case(base: list[dict], rng: random.Random, classes: list[str]) -> tuple[str, list[str]]:
    tree = json.loads(rng.choice(base))
    for _ in range(rng.randint(1, 4)):
        mutate(tree, rng, classes)
    text = json.dumps(tree)
    if rng.random() < 0.15 or DEEP_JSON in text:
        text = damage_text(text, rng)
    text = text.replace(DEEP_JSON, "[[[]]]").replace(BIG_JSON, "9" * 5000)
    overrides = []
    if rng.random() < 0.3:
        value = json.dumps(rng.choice(HOSTILE[:-1]))
        overrides.append(f"{rng.choice(['1', '12', 'Sampler', 'Load Video', '3'])}.{rng.choice(['cfg', 'seed', 'start', 'length', 'video_path'])}={value}")
    return text, overrides


def run_case(text: str, overrides: list[str], classes: dict) -> BaseException | None:
    """None when the case ends valid or as a WorkflowError; the escaping exception otherwise."""
    try:
        prompt = load_workflow(parse_workflow_text(text, "fuzzed workflow"), classes)
        apply_overrides(prompt, overrides, classes)
        if not collect_errors(prompt, classes):
            check_prompt(prompt, classes)  # the CLI's checks after validation (video files, spans, model limits)
    except WorkflowError:
        return None
    except Exception as e:  # noqa: BLE001 - the escape being counted
        return e
    return None


def fuzz(cases: int, seed: int, classes: dict, *, report=None) -> list[tuple[str, BaseException]]:
    rng = random.Random(seed)
    base = [json.dumps(tree) for tree in seeds(classes)]
    names = sorted(classes)
    escapes = []
    for k in range(cases):
        text, overrides = make_case(base, rng, names)
        err = run_case(text, overrides, classes)
        if err is not None:
            escapes.append((text, err))
            if report:
                report(k, text, err)
    return escapes


def _node_classes() -> dict:
    from kling_foley_core.cli import load_node_classes
    from test_runner_nodes import NODE_CLASS_MAPPINGS as TEST_NODES  # the subgraph seed's nodes
    from test_workflows_shipped import COMFY_CORE  # ComfyUI's own nodes that two shipped workflows start from

    return {**load_node_classes(), **COMFY_CORE, **TEST_NODES}


def test_shipped_workflows_in_both_formats_load_and_validate():
    classes = _node_classes()
    base = seeds(classes)
    assert len(base) == 2 * len(list(WORKFLOWS.glob("*.json"))) + 1
    for data in base:  # the seeds are sound (only model files absent here): a fuzz failure is the mutation's doing
        errors = collect_errors(load_workflow(data, classes), classes)
        assert {e.kind for e in errors} <= {"custom_validation_failed", "value_not_in_list"}, errors  # model files


def test_two_thousand_mutated_workflows_never_escape():
    escapes = fuzz(2000, seed=0, classes=_node_classes())
    assert not escapes, f"{len(escapes)} escaped, first: {escapes[0][1]!r} on {escapes[0][0][:300]}"


if __name__ == "__main__":
    import argparse
    import collections
    import time

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=5, help="print this many escapes with their tracebacks")
    args = ap.parse_args()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    sites: collections.Counter = collections.Counter()
    shown = 0

    def report(k, text, err):
        global shown
        tb = traceback.extract_tb(err.__traceback__)[-1]
        sites[(type(err).__name__, Path(tb.filename).name, tb.lineno)] += 1
        if shown < args.show:
            shown += 1
            print(f"case {k}: {type(err).__name__}: {err} at {Path(tb.filename).name}:{tb.lineno}\n  {text[:300]}")

    t0 = time.perf_counter()
    escapes = fuzz(args.cases, args.seed, _node_classes(), report=report)
    print(f"{len(escapes)} of {args.cases} fuzzed workflows escaped ({time.perf_counter() - t0:.0f} s)")
    for (name, file, line), n in sites.most_common():
        print(f"  {n:6d}  {name} at {file}:{line}")
