"""Execute a validated API-format prompt with ComfyUI V1 node classes, headless.

Semantics follow ComfyUI's executor where it matters for the same node classes to behave the same:

* only the nodes some output node (``OUTPUT_NODE = True``) depends on run, in topological order;
* every input is a list; a node without ``INPUT_IS_LIST`` is called once per index of its longest input list
  (shorter lists repeat their last element), results are merged per output, and an ``OUTPUT_IS_LIST`` output is
  flattened; a node with ``INPUT_IS_LIST`` gets the whole lists in one call;
* a node may return a tuple, or ``{"result": tuple, "ui": {...}}``; hidden inputs ``UNIQUE_ID``, ``PROMPT``
  and ``EXTRA_PNGINFO`` are filled in; nodes run under ``torch.inference_mode()``;
* one node object per (node id, class) is kept across runs, as in ComfyUI.

Not supported, with a clear error instead: node expansion (a node returning ``{"expand": ...}``). Lazy inputs
are evaluated eagerly (same results, possibly more work).

**Output cache.** Outputs are cached per process under a key built from the node's class, its literal inputs,
its ``IS_CHANGED`` value and, recursively, the keys of the nodes it links from. Re-running a workflow where only
the seed changed therefore re-runs only the nodes downstream of the seed; model loaders and encoders are reused.
After a run, the cache keeps the entries that run used plus the ``keep`` most recently used others (default 0:
like ComfyUI's classic cache, memory is bounded by one workflow's outputs).
"""
from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .errors import NodeExecutionError, ProcessingInterrupted, WorkflowError, WorkflowValidationError
from .interrupt import check_interrupt, clear_interrupt
from .nodeinfo import accepted_kwargs, input_specs
from .overrides import apply_overrides
from .progress import reset_current_node, reset_progress_hook, set_current_node, set_progress_hook
from .validation import _call_class_fn, dependencies, output_nodes, validate_prompt
from .workflow import _is_link, load_workflow

logger = logging.getLogger(__name__)

EventHook = Callable[[str, dict], None]


@dataclass
class RunResult:
    """What one run produced. ``outputs[node_id][slot]`` is ComfyUI's per-slot list of values."""

    prompt: dict
    outputs: dict[str, list[list]] = field(default_factory=dict)
    ui: dict[str, dict] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)  # nodes whose function ran
    cached: list[str] = field(default_factory=list)  # nodes served from the cache
    seconds: float = 0.0

    def output(self, node_id: str, slot: int = 0) -> Any:
        """The value of one output: the single item, or the whole list when the node produced several."""
        values = self.outputs[str(node_id)][slot]
        return values[0] if len(values) == 1 else values

    def saved_files(self) -> list[dict]:
        """Every ``{"filename", "subfolder", "type"}`` record the output nodes reported in their ``ui``."""
        files = []
        for ui in self.ui.values():
            for items in ui.values():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, Mapping) and "filename" in item:
                        files.append(dict(item))
        return files


def _freeze(value: Any) -> Any:
    """Hashable stand-in for a literal input (JSON values, plus anything else by identity)."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return (type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_freeze(v) for v in value))
    if isinstance(value, Mapping):
        return ("dict", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    try:
        hash(value)
        return ("obj", value)
    except TypeError:
        return ("id", id(value))


class _Uncacheable:
    """IS_CHANGED returned NaN or failed: the node must run every time (a fresh object never compares equal)."""

    __slots__ = ()


class OutputCache:
    """Per-process output cache, LRU over signatures."""

    def __init__(self, keep: int = 0):
        self.keep = keep
        self._entries: OrderedDict[Any, tuple[list[list], dict]] = OrderedDict()

    def get(self, key: Any):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Any, outputs: list[list], ui: dict) -> None:
        self._entries[key] = (outputs, ui)
        self._entries.move_to_end(key)

    def prune(self, used: set) -> None:
        others = [k for k in self._entries if k not in used]
        for k in others[: max(0, len(others) - self.keep)]:  # oldest first
            del self._entries[k]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def topological_order(prompt: Mapping, nodes: Iterable[str]) -> list[str]:
    """Sources first; ties keep the order of the prompt (deterministic). Assumes no cycle (validated)."""
    nodes = list(nodes)
    wanted = set(nodes)
    rank = {nid: k for k, nid in enumerate(prompt)}
    done: set[str] = set()
    order: list[str] = []

    def visit(nid: str) -> None:
        stack = [(nid, False)]
        while stack:
            cur, expanded = stack.pop()
            if cur in done:
                continue
            if expanded:
                done.add(cur)
                order.append(cur)
                continue
            stack.append((cur, True))
            srcs = sorted({str(v[0]) for v in prompt[cur]["inputs"].values() if _is_link(v)} & wanted,
                          key=lambda s: rank.get(s, 0), reverse=True)
            stack.extend((s, False) for s in srcs if s not in done)

    for nid in sorted(nodes, key=lambda s: rank.get(s, 0)):
        visit(nid)
    return order


class WorkflowRunner:
    """Runs ComfyUI workflows headless with the node classes given as ``{class_type: cls}``.

    Keep one runner per process to benefit from its output cache (the CLI's ``batch`` does)::

        runner = WorkflowRunner(NODE_CLASS_MAPPINGS)
        result = runner.run("workflows/video_to_foley.json", overrides=["Sampler.seed=7"])
    """

    def __init__(self, node_classes: Mapping[str, type], *, cache: bool = True, keep: int = 0,
                 checks: Iterable[Callable[[dict, Mapping], list]] = ()):
        self.node_classes = dict(node_classes)
        self.checks = list(checks)  # check(prompt, node_classes) -> [NodeError]: after validation, before any run
        self.cache = OutputCache(keep=keep) if cache else None
        self._objects: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------ preparation
    def prepare(self, workflow: Any, overrides: Iterable[str] = (), outputs: Iterable[str] | None = None) -> dict:
        """Load (file path or dict, API or UI format), apply overrides, validate; returns the API prompt."""
        prompt = load_workflow(workflow, self.node_classes)
        apply_overrides(prompt, overrides, self.node_classes)
        validate_prompt(prompt, self.node_classes, outputs)
        errors = [e for check in self.checks for e in check(prompt, self.node_classes)]
        if errors:
            raise WorkflowValidationError(errors)
        return prompt

    # ------------------------------------------------------------------ execution
    def run(self, workflow: Any, *, overrides: Iterable[str] = (), outputs: Iterable[str] | None = None,
            progress: Callable[[str | None, int, int], None] | None = None, on_event: EventHook | None = None,
            extra_pnginfo: dict | None = None) -> RunResult:
        """Validate then execute. ``outputs`` restricts the run to some output nodes (default: all).

        ``progress(node_id, value, total)`` receives node progress bars; ``on_event(name, data)`` receives
        ``"executing"``, ``"cached"`` and ``"executed"`` events with ``{"node", "class_type"}``.
        """
        prompt = self.prepare(workflow, overrides, outputs)
        roots = list(outputs) if outputs is not None else output_nodes(prompt, self.node_classes)
        if extra_pnginfo is None and isinstance(workflow, Mapping) and isinstance(workflow.get("nodes"), list):
            extra_pnginfo = {"workflow": workflow}
        return self.execute(prompt, roots, progress=progress, on_event=on_event, extra_pnginfo=extra_pnginfo)

    def execute(self, prompt: dict, roots: list[str], *, progress=None, on_event: EventHook | None = None,
                extra_pnginfo: dict | None = None) -> RunResult:
        """Execute an already validated prompt."""
        clear_interrupt()
        started = time.perf_counter()
        order = topological_order(prompt, dependencies(prompt, roots))
        result = RunResult(prompt=prompt)
        keys: dict[str, Any] = {}
        used: set = set()
        nid = None
        hook_token = set_progress_hook(progress)
        try:
            with _inference_mode():
                for nid in order:
                    check_interrupt()  # between nodes: never start new work once interrupted
                    node = prompt[nid]
                    cls = self.node_classes[node["class_type"]]
                    keys[nid] = key = self._cache_key(nid, node, cls, keys)
                    hit = self.cache.get(key) if self.cache is not None else None
                    if hit is not None:
                        result.outputs[nid], ui = hit
                        if ui:
                            result.ui[nid] = ui
                        result.cached.append(nid)
                        used.add(key)
                        _emit(on_event, "cached", nid, node)
                        continue
                    _emit(on_event, "executing", nid, node)
                    node_token = set_current_node(nid)
                    try:
                        outs, ui = self._run_node(nid, node, cls, prompt, result.outputs, extra_pnginfo)
                    except (ProcessingInterrupted, WorkflowError, NodeExecutionError):
                        raise
                    except Exception as e:  # noqa: BLE001
                        if type(e).__name__ == "InterruptProcessingException":  # ComfyUI's own interrupt
                            raise ProcessingInterrupted(node_id=nid) from e
                        raise NodeExecutionError(nid, node["class_type"], e) from e
                    finally:
                        reset_current_node(node_token)
                    result.outputs[nid] = outs
                    if ui:
                        result.ui[nid] = ui
                    result.executed.append(nid)
                    if self.cache is not None and not isinstance(key, _Uncacheable):
                        self.cache.put(key, outs, ui)
                        used.add(key)
                    _emit(on_event, "executed", nid, node)
        except ProcessingInterrupted as e:
            clear_interrupt()  # served: the next call (a node or pipeline used directly) must not stop at once
            if e.node_id is None and nid is not None:  # say where it stopped
                raise ProcessingInterrupted(node_id=nid) from e
            raise
        finally:
            reset_progress_hook(hook_token)
            if self.cache is not None:
                self.cache.prune(used | set(keys.values()))
        result.seconds = time.perf_counter() - started
        return result

    # ------------------------------------------------------------------ helpers
    def _cache_key(self, nid: str, node: Mapping, cls: type, keys: Mapping[str, Any]) -> Any:
        specs = input_specs(cls)
        parts = []
        for name, value in sorted(node["inputs"].items()):
            if _is_link(value):
                src_key = keys.get(str(value[0]))
                if isinstance(src_key, _Uncacheable):
                    return _Uncacheable()
                parts.append((name, ("link", src_key, int(value[1]))))
            else:
                parts.append((name, _freeze(value)))
        changed = None
        if hasattr(cls, "IS_CHANGED"):
            literal = {k: v for k, v in node["inputs"].items() if not _is_link(v)}
            try:
                fn = getattr(cls, "IS_CHANGED")
                changed = _call_class_fn(cls, "IS_CHANGED", accepted_kwargs(fn, literal))
            except Exception as e:  # noqa: BLE001 - ComfyUI treats a failing IS_CHANGED as "changed"
                logger.warning("node %s (%s): IS_CHANGED failed (%s); running it again", nid, node["class_type"], e)
                return _Uncacheable()
            if isinstance(changed, float) and math.isnan(changed):
                return _Uncacheable()
        per_node = getattr(cls, "NOT_IDEMPOTENT", False) or any(s.type == "UNIQUE_ID" for s in specs)
        return (node["class_type"], cls, nid if per_node else None, _freeze(changed), tuple(parts))

    def _run_node(self, nid, node, cls, prompt, outputs, extra_pnginfo) -> tuple[list[list], dict]:
        specs = {s.name: s for s in input_specs(cls)}
        data: dict[str, list] = {}
        for name, value in node["inputs"].items():
            if _is_link(value):
                data[name] = outputs[str(value[0])][int(value[1])]
            elif name in specs and specs[name].category != "hidden":
                data[name] = [value]
        for name, spec in specs.items():
            if spec.category == "hidden":
                if spec.type == "UNIQUE_ID":
                    data[name] = [nid]
                elif spec.type == "PROMPT":
                    data[name] = [prompt]
                elif spec.type == "EXTRA_PNGINFO":
                    data[name] = [extra_pnginfo]
                else:
                    data[name] = [None]
        obj = self._objects.get((nid, node["class_type"]))
        if obj is None:
            obj = self._objects[(nid, node["class_type"])] = cls()
        func = getattr(obj, cls.FUNCTION)
        raw_results = []
        if getattr(cls, "INPUT_IS_LIST", False):
            check_interrupt()
            raw_results.append(func(**data))
        else:
            n = max((len(v) for v in data.values()), default=1)
            if any(len(v) == 0 for v in data.values()):
                n = 0  # an empty upstream list: nothing to map over (ComfyUI does the same)
            for i in range(n):
                check_interrupt()
                raw_results.append(func(**{k: v[i if i < len(v) else -1] for k, v in data.items()}))
        return self._merge(nid, node, cls, raw_results)

    @staticmethod
    def _merge(nid, node, cls, raw_results) -> tuple[list[list], dict]:
        n_out = len(getattr(cls, "RETURN_TYPES", ()) or ())
        results, uis = [], []
        for r in raw_results:
            if isinstance(r, dict):
                if "expand" in r:
                    raise WorkflowError(f"node {nid} ({node['class_type']}) returned a graph expansion, which the "
                                        f"headless runner does not support")
                if "ui" in r and r["ui"] is not None:
                    uis.append(r["ui"])
                if "result" in r:
                    results.append(tuple(r["result"]))
            elif r is None:
                if n_out:
                    raise NodeExecutionError(nid, node["class_type"],
                                             TypeError(f"returned None but RETURN_TYPES declares {n_out} outputs"))
            else:
                results.append(tuple(r))
        for r in results:
            if len(r) != n_out:
                raise NodeExecutionError(nid, node["class_type"], TypeError(
                    f"returned {len(r)} values but RETURN_TYPES declares {n_out}"))
        is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", None) or (False,) * n_out)
        outs = []
        for i in range(n_out):
            if i < len(is_list) and is_list[i]:
                outs.append([x for r in results for x in r[i]])
            else:
                outs.append([r[i] for r in results])
        ui: dict = {}
        for u in uis:
            for k, v in u.items():
                ui.setdefault(k, []).extend(v if isinstance(v, list) else [v])
        return outs, ui


def _emit(hook: EventHook | None, name: str, nid: str, node: Mapping) -> None:
    if hook is not None:
        hook(name, {"node": nid, "class_type": node["class_type"]})


class _inference_mode:
    """``torch.inference_mode()`` when torch is importable (it always is for this library), else nothing."""

    def __enter__(self):
        try:
            import torch

            self._ctx = torch.inference_mode()
        except ImportError:  # pragma: no cover
            self._ctx = None
        if self._ctx is not None:
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            return self._ctx.__exit__(*exc)
        return False


def run_workflow(workflow: Any, node_classes: Mapping[str, type], **kwargs) -> RunResult:
    """One-shot convenience: ``WorkflowRunner(node_classes).run(workflow, **kwargs)``."""
    return WorkflowRunner(node_classes).run(workflow, **kwargs)
