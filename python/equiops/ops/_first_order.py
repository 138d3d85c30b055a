"""Autograd for the ops whose fused backward is first-order only (EGNN message, PointConv).

``equiops::<op>`` gets ``backward``; ``equiops::<op>_backward`` gets a derivative that raises
a clear error (naming ``backend='torch'``, whose plain-PyTorch path differentiates to any
order) instead of PyTorch's "derivative not implemented".
"""

from __future__ import annotations

from typing import Callable

import torch


def register_first_order(op: str, backward: Callable, setup_context: Callable, double_backward_hint: str) -> None:
    """``op``: the schema name without namespace; ``double_backward_hint``: what to build
    instead, ending the error message."""
    public = f"equiops.{op}"

    def no_double_backward(ctx, *grads):
        raise RuntimeError(f"{public}: the fused backward is first-order only; {double_backward_hint}")

    def nothing_to_save(ctx, inputs, output):
        pass

    torch.library.register_autograd(f"equiops::{op}", backward, setup_context=setup_context)
    torch.library.register_autograd(f"equiops::{op}_backward", no_double_backward, setup_context=nothing_to_save)
