"""Headless runner for ComfyUI workflows (API or UI format) built from ComfyUI V1 node classes.

Imports nothing from ComfyUI and nothing from the node package: callers pass ``{class_type: cls}``.

    from kling_foley_core.runner import WorkflowRunner
    runner = WorkflowRunner(NODE_CLASS_MAPPINGS)
    result = runner.run("workflow.json", overrides=["3.seed=42"])

Node code uses :func:`check_interrupt` (``runner.interrupt``), :class:`ProgressBar` (``runner.progress``) and the
output/model folder helpers in ``runner.paths``; all of them also work inside ComfyUI.
"""
from .errors import (ModelNotFoundError, NodeError, NodeExecutionError, OutputPathError, OverrideError,
                     ProcessingInterrupted, WorkflowError, WorkflowLoadError, WorkflowValidationError)
from .executor import OutputCache, RunResult, WorkflowRunner, run_workflow, topological_order
from .interrupt import check_interrupt, clear_interrupt, interrupt, is_interrupted
from .overrides import apply_overrides, parse_override
from .progress import ProgressBar
from .validation import collect_errors, validate_prompt
from .workflow import detect_format, load_workflow, load_workflow_file, to_api_prompt, ui_to_api

__all__ = [
    "ModelNotFoundError", "NodeError", "NodeExecutionError", "OutputPathError", "OverrideError",
    "ProcessingInterrupted", "WorkflowError", "WorkflowLoadError", "WorkflowValidationError",
    "OutputCache", "RunResult", "WorkflowRunner", "run_workflow", "topological_order",
    "check_interrupt", "clear_interrupt", "interrupt", "is_interrupted",
    "apply_overrides", "parse_override", "ProgressBar", "collect_errors", "validate_prompt",
    "detect_format", "load_workflow", "load_workflow_file", "to_api_prompt", "ui_to_api",
]
