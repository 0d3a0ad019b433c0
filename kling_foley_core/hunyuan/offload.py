"""Block swap: keep some transformer blocks' weights on a storage device and stream them in just before use.

For inference the weights never change, so a block does not have to be copied *back*: the storage copy stays
where it is (e.g. pinned CPU memory), a forward pre-hook points the block's parameters at a fresh copy on the
execution device, and a forward hook points them back at the storage tensors, dropping the device copy. Peak
device memory is then the resident part plus one swapped block at a time; the cost is one host→device copy of
each swapped block per forward.

    swap = BlockSwap(model.single_blocks[:20], execution_device="cuda")   # or enable_block_swap(model, 20, "cuda")
    ...                                                                     # use the model as usual
    swap.remove()                                                           # back to fully resident storage
"""
from __future__ import annotations

import logging
from typing import Iterable

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


class BlockSwap:
    """Forward hooks that materialise each given block on ``execution_device`` only while it runs."""

    def __init__(self, blocks: Iterable[nn.Module], execution_device: str | torch.device,
                 storage_device: str | torch.device = "cpu", pin_memory: bool | None = None,
                 non_blocking: bool = True):
        self.blocks = list(blocks)
        self.execution_device = torch.device(execution_device)
        self.storage_device = torch.device(storage_device)
        if pin_memory is None:  # pinned host memory only helps (and only exists) with an accelerator
            pin_memory = self.storage_device.type == "cpu" and self.execution_device.type not in ("cpu", "meta")
        self.non_blocking = non_blocking and self.execution_device.type not in ("cpu", "meta")
        self.loads = 0
        self.releases = 0
        self.resident: set[int] = set()  # indices of blocks currently materialised on the execution device
        self.max_resident = 0
        self._storage: list[dict[str, torch.Tensor]] = []
        self._handles = []
        for idx, block in enumerate(self.blocks):
            stored = {}
            for name, t in self._tensors(block):
                s = t.detach().to(self.storage_device)
                if pin_memory and not s.is_pinned():
                    s = s.pin_memory()
                self._set(block, name, s)
                stored[name] = s
            self._storage.append(stored)
            self._handles.append(block.register_forward_pre_hook(self._make_pre(idx)))
            self._handles.append(block.register_forward_hook(self._make_post(idx)))

    @staticmethod
    def _tensors(block: nn.Module):
        yield from block.named_parameters(recurse=True)
        yield from ((n, b) for n, b in block.named_buffers(recurse=True) if b is not None)

    @staticmethod
    def _set(block: nn.Module, name: str, t: torch.Tensor) -> None:
        owner_name, _, leaf = name.rpartition(".")
        owner = block.get_submodule(owner_name) if owner_name else block
        if leaf in owner._parameters:
            # a new Parameter object rather than ``.data =``: set_data refuses some device pairs (e.g. cpu ↔ meta)
            owner._parameters[leaf] = nn.Parameter(t, requires_grad=False)
        else:
            owner._buffers[leaf] = t

    def _make_pre(self, idx: int):
        def pre_hook(module, args):
            for name, s in self._storage[idx].items():
                self._set(module, name, s.to(self.execution_device, non_blocking=self.non_blocking))
            self.loads += 1
            self.resident.add(idx)
            self.max_resident = max(self.max_resident, len(self.resident))
        return pre_hook

    def _make_post(self, idx: int):
        def post_hook(module, args, output):
            for name, s in self._storage[idx].items():
                self._set(module, name, s)  # the device copy is dropped here; nothing is copied back
            self.releases += 1
            self.resident.discard(idx)
        return post_hook

    def remove(self) -> None:
        """Remove the hooks; the blocks stay on the storage device."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __repr__(self) -> str:
        return (f"BlockSwap({len(self.blocks)} blocks, {self.storage_device} → {self.execution_device}, "
                f"loads={self.loads})")


def enable_block_swap(model: nn.Module, num_blocks: int, execution_device: str | torch.device,
                      storage_device: str | torch.device = "cpu", pin_memory: bool | None = None) -> BlockSwap | None:
    """Swap the last ``num_blocks`` transformer blocks (single-stream first, then triple-stream) of a
    HunyuanFoleyDiT and move everything else to ``execution_device``. ``num_blocks=0`` just moves the model."""
    blocks = list(model.triple_blocks) + list(model.single_blocks)
    if not 0 <= num_blocks <= len(blocks):
        raise ValueError(f"blocks_to_swap={num_blocks} must be between 0 and {len(blocks)} (this model's block count)")
    swapped = blocks[len(blocks) - num_blocks:] if num_blocks else []
    swapped_ids = {id(b) for b in swapped}
    # move the resident part; swapped blocks go to storage
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            for blk in child:
                blk.to(storage_device if id(blk) in swapped_ids else execution_device)
        else:
            child.to(execution_device)
    for pname, p in model.named_parameters(recurse=False):
        p.data = p.data.to(execution_device)
    if not swapped:
        return None
    log.info("block swap: %d of %d blocks stream %s → %s", num_blocks, len(blocks), storage_device, execution_device)
    return BlockSwap(swapped, execution_device, storage_device, pin_memory)
