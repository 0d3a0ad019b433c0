"""Exceptions of the headless workflow runner.

Everything a user can cause by a bad workflow file, a bad ``--set`` or a bad path is a ``WorkflowError``
(a ``ValueError``) whose ``str`` is one readable message, so the CLI can print it without a traceback.
Validation problems are collected as ``NodeError`` records shaped like ComfyUI's ``node_errors``
(node id, class_type, input name, kind, message) and raised together in one ``WorkflowValidationError``.
"""
from __future__ import annotations

from dataclasses import dataclass


class WorkflowError(ValueError):
    """Base class: a workflow, override, path or node input the user can fix."""


class WorkflowLoadError(WorkflowError):
    """The workflow file cannot be read or is in neither ComfyUI API nor UI format."""


class OverrideError(WorkflowError):
    """A ``--set NODE.input=value`` override names no node/input, or an ambiguous node."""


class ModelNotFoundError(WorkflowError, FileNotFoundError):
    """A model file was not found in any of the model folders searched."""


class OutputPathError(WorkflowError):
    """A ``filename_prefix`` or output directory that is unusable (e.g. leaves the output folder)."""


@dataclass(frozen=True)
class NodeError:
    """One validation problem, in the shape ComfyUI reports (``node_errors[id]["errors"][i]``)."""

    node_id: str
    class_type: str
    kind: str  # ComfyUI's error "type": required_input_missing, value_not_in_list, ...
    message: str
    input_name: str | None = None

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type or '?'})"
        if self.input_name is not None:
            where += f" input '{self.input_name}'"
        return f"{where}: {self.message} [{self.kind}]"

    def as_comfy(self) -> dict:
        """The record as ComfyUI's ``/prompt`` endpoint would report it."""
        return {
            "type": self.kind,
            "message": self.message,
            "details": self.input_name or "",
            "extra_info": {"input_name": self.input_name} if self.input_name else {},
        }


class WorkflowValidationError(WorkflowError):
    """All validation problems of one workflow, raised together before anything executes."""

    def __init__(self, errors: list[NodeError]):
        self.errors = list(errors)
        super().__init__(self._format())

    def _format(self) -> str:
        n = len(self.errors)
        if n == 1:
            return f"workflow failed validation: {self.errors[0]}"
        head = f"workflow failed validation ({n} errors):"
        return "\n".join([head] + [f"  - {e}" for e in self.errors])

    def node_errors(self) -> dict:
        """ComfyUI's ``node_errors`` mapping: ``{node_id: {"errors": [...], "class_type": ...}}``."""
        out: dict = {}
        for e in self.errors:
            entry = out.setdefault(e.node_id, {"errors": [], "class_type": e.class_type, "dependent_outputs": []})
            entry["errors"].append(e.as_comfy())
        return out


class NodeExecutionError(RuntimeError):
    """A node raised while executing. Keeps the original exception as ``__cause__``.

    Not a ValueError on purpose: the workflow was valid, the node's own code failed. When the node raised a
    ``ValueError`` (our convention for bad input found inside a node), ``is_user_error`` is True and the CLI
    prints the message alone.
    """

    def __init__(self, node_id: str, class_type: str, exc: BaseException):
        self.node_id = node_id
        self.class_type = class_type
        self.original = exc
        self.is_user_error = isinstance(exc, ValueError)
        super().__init__(f"node {node_id} ({class_type}) failed: {type(exc).__name__}: {exc}")


class ProcessingInterrupted(InterruptedError):
    """Raised by ``check_interrupt()`` (and by the runner between nodes) after ``interrupt()`` was called."""

    def __init__(self, message: str = "processing interrupted", node_id: str | None = None):
        self.node_id = node_id
        super().__init__(message if node_id is None else f"{message} (at node {node_id})")
