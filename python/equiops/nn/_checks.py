"""Input checks shared by the modules: floating tensors like the module's parameters.

One place for the messages, so every module says the same thing: the module, the
argument, what was expected and what was given (docs/BAD_INPUT.md). Without these,
a wrong dtype or device surfaces deep inside as PyTorch's matmul message.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def check_floating(where: str, name: str, t) -> None:
    """``t`` is a floating-point tensor (an integer one would silently change results,
    e.g. an integer ``torch.linspace``)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating-point tensor, got {t.dtype}")


def check_like(where: str, like: Optional[Tensor], dtype: bool = True, **tensors) -> None:
    """Each tensor floating, and on ``like``'s device (and in its dtype when ``dtype``);
    ``like`` is a parameter of the module (``None``: no parameters, nothing to match).
    Tensors given as ``None`` (optional arguments left out) are skipped."""
    for name, t in tensors.items():
        if t is None:
            continue
        check_floating(where, name, t)
        if like is None:
            continue
        if dtype and t.dtype != like.dtype:
            raise TypeError(f"{where}: {name} must have the dtype of the module's parameters ({like.dtype}), got "
                            f"{t.dtype} (convert the module with .to(dtype))")
        if t.device != like.device:
            raise ValueError(f"{where}: {name} must be on the device of the module's parameters ({like.device}), "
                             f"got {t.device}")


def first_parameter(module: torch.nn.Module) -> Optional[Tensor]:
    return next(module.parameters(), None)
