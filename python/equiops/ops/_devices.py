"""The device check of the fake kernels.

A call with a ``meta`` tensor among CPU tensors dispatches to the op's fake (Meta)
kernel, since Meta outranks CPU in PyTorch's dispatch; without this check the fake
kernel answered with an uninitialised tensor on the first input's device instead of an
error. The check costs nothing in real tracing (fake tensors there share one device).
"""

from __future__ import annotations

from typing import Iterable


def same_device(op: str, tensors: dict, cpu_ok: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` unless every tensor of ``tensors`` (name -> tensor or None) is
    on the first one's device; tensors named in ``cpu_ok`` may also be on the CPU (the
    spherical harmonics' coupling table is a CPU constant on every device)."""
    items = [(name, t) for name, t in tensors.items() if t is not None]
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device and not (name in cpu_ok and t.device.type == "cpu"):
            raise ValueError(f"equiops.{op}: {name} must be on {first.device} like {first_name}, got {t.device}")
