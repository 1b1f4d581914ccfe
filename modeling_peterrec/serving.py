"""One backbone in memory serving many patched tasks (Section 1: one model, many downstream tasks).

Patches of different tasks, even with different insertion modes, attach to the same frozen backbone; a call runs
one task for the whole batch, or a mixed batch with one task per row, in which each row goes through its own task's
patch (the backbone groups rows by kind of patch, `modeling_peterrec.route_rows`), then through its own task's
readout (tasks may read users differently, each with its own attention pooler) and head.

The backbones that run one task's patches per call (CmnRec, SASRec: `modeling_peterrec.SlotPatches`) serve a mixed
batch one task at a time: each task's rows run through the backbone with that task's patch, then its head. Over item
texts that includes the task's PEFT adapter in the item encoder, if it has one (`item_text_patches`): one backbone
call per task, not PEFT's mixed-adapter batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from .modeling_peterrec import SlotPatches
from .saving import attach_patch, read_patch
from .transfer import backbone_of


class MultiTaskPeterRec(nn.Module):
    """Serves every loaded task from one shared backbone.

    Only patches of methods that leave the backbone untouched (`FineTuningMethod.shares_backbone`) can share it.
    Two patches trained under the same task name load side by side with `load_patch(..., task="other_name")`.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone_of(backbone)
        self.tasks = nn.ModuleDict()
        self.active_task: str | None = None

    def load_patch(
        self, source: str | os.PathLike, revision: str | None = None, task: str | None = None
    ) -> str:
        """Attaches a saved patch under its own task name, or under `task`; returns the name, which becomes the
        active task."""
        spec, tensors = read_patch(source, revision, task=task)
        if not spec.method_record.shares_backbone:
            raise ValueError(
                f"A {spec.method} patch changes the backbone itself and cannot share it; serve it as a "
                "separate model (load_patch) or use a method that keeps the backbone frozen."
            )
        if spec.task in self.tasks:
            raise ValueError(
                f"Task {spec.task!r} is already loaded; pass task='another_name' to load this patch beside it."
            )
        self.tasks[spec.task] = attach_patch(spec, tensors, self.backbone)
        self.active_task = spec.task
        return spec.task

    def set_active_task(self, task: str) -> None:
        """Switches the task used when `forward` gets none; the backbone is not reloaded."""
        self._check([task])
        self.active_task = task

    def _check(self, tasks: Sequence[str]) -> None:
        unknown = sorted(set(tasks) - set(self.tasks))
        if unknown:
            raise KeyError(f"No task named {unknown}; loaded tasks are {sorted(self.tasks)}.")

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        task: str | Sequence[str] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Task outputs (class logits, or scores of every target item).

        Returns a (batch, outputs) tensor for a single task, or a list with one output vector per row for a
        mixed batch (tasks have different output sizes).
        """
        task = task or self.active_task
        if task is None:
            raise ValueError("No task given and none active; load a patch or pass task=...")
        if attention_mask is None:
            attention_mask = input_ids.ne(self.backbone.config.pad_token_id)
        per_row = [task] * input_ids.shape[0] if isinstance(task, str) else list(task)
        self._check(per_row)
        rows_of: dict[str, list[int] | slice] = {task: slice(None)} if isinstance(task, str) else {}
        if not isinstance(task, str):
            for row, name in enumerate(per_row):
                rows_of.setdefault(name, []).append(row)
        hidden = self._shared_pass(input_ids, attention_mask, task, per_row, rows_of)
        if isinstance(task, str):
            return self.tasks[task].task_logits(input_ids, attention_mask, hidden)
        outputs: list[torch.Tensor | None] = [None] * len(per_row)
        for name, rows in rows_of.items():
            # Each task's own head on its rows: its readout (Figure 2, or its attention pooler), output layer and
            # wide term; through the backbone with the task's patch here unless the shared pass ran it.
            rows_hidden = hidden[rows] if hidden is not None else None
            logits = self.tasks[name].task_logits(input_ids[rows], attention_mask[rows], rows_hidden)
            for row, vector in zip(rows, logits.unbind(0), strict=True):
                outputs[row] = vector
        return outputs

    def _shared_pass(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        task: str | Sequence[str],
        per_row: list[str],
        rows_of: dict[str, list[int] | slice],
    ) -> torch.Tensor | None:
        """The backbone's hidden states of the whole batch, each row with its task's patch, in one call; None for a
        backbone that runs one task's patches per call (`SlotPatches`), which each task's head then runs itself."""
        if isinstance(self.backbone, SlotPatches):
            return None
        for name, rows in rows_of.items():
            if self.tasks[name].readout is not None:
                self.backbone.check_readout_input(input_ids[rows], self.tasks[name].readout.name)
        patch = (
            self.tasks[task].patch_name
            if isinstance(task, str)
            else [self.tasks[n].patch_name for n in per_row]
        )
        return self.backbone(input_ids, attention_mask=attention_mask, patch=patch).last_hidden_state


__all__ = ["MultiTaskPeterRec"]
