"""The fine-tuning schedule a training can ask for: head first, then everything with a warm-up.

``head_epochs``: the first N epochs train only the classifier head (the last linear layer), so a
fresh or mismatched head does not push large gradients into features that already fit a similar
domain.  ``warmup_steps``: the learning rate rises linearly from 1/warmup_steps of ``lr`` to ``lr``
over the first steps of full training (after the head epochs), the usual remedy for the first large
updates of fine-tuning.  Both default to 0, which leaves a from-scratch recipe exactly as it was.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn


def _head(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no linear head to train first")
    return linears[-1]


class Schedule:
    """Per-epoch freezing and per-step learning-rate warm-up around one optimiser."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, params: Mapping[str, Any]) -> None:
        self.model, self.opt = model, opt
        self.head_epochs = int(params.get("head_epochs", 0) or 0)
        self.warmup = int(params.get("warmup_steps", 0) or 0)
        self.base = [g["lr"] for g in opt.param_groups]
        self.full_steps = 0
        self._head_only = False
        self._trainable = {id(p): p.requires_grad for p in model.parameters()}
        self._head_ids = {id(p) for p in _head(model).parameters()} if self.head_epochs else set()

    def epoch_start(self, epoch: int) -> None:
        self._head_only = head_only = epoch < self.head_epochs
        for p in self.model.parameters():
            p.requires_grad_(self._trainable[id(p)] and (not head_only or id(p) in self._head_ids))
        if not head_only and epoch == self.head_epochs:
            self.full_steps = 0
        self._set_lr(head_only)

    def step_done(self) -> None:
        if not self._head_only:
            self.full_steps += 1
        self._set_lr(self._head_only)

    def _set_lr(self, head_only: bool) -> None:
        factor = 1.0 if head_only or not self.warmup else min(1.0, (self.full_steps + 1) / self.warmup)
        for g, lr in zip(self.opt.param_groups, self.base):
            g["lr"] = lr * factor


__all__ = ["Schedule"]
