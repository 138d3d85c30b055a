r"""Plain-PyTorch tensor-product convolution: the semantics every fused kernel must match.

For edges ``src[e] -> dst[e]`` (the caller's explicit direction), node features
``x (num_nodes, dim1)``, edge attributes ``edge_attr (E2, dim2)`` and edge weights
``weight (Ew, dim_w)`` with ``E2, Ew`` each ``E`` or ``1`` (``1``: the same row for every
edge, e.g. e3nn's shared weights)::

    out = zeros(num_nodes, dim_out).index_add_(0, dst, tensor_product(x[src], edge_attr, weight))

This module materialises the ``(E, dim_out)`` messages on purpose (it is the unfused
pipeline the kernels replace) and is differentiable to any order by autograd.
"""

from __future__ import annotations

from torch import Tensor

from .tensor_product import tensor_product

__all__ = ["tp_conv"]


def tp_conv(x: Tensor, edge_attr: Tensor, weight: Tensor, src: Tensor, dst: Tensor, num_nodes: int, problem) -> Tensor:
    """``(num_nodes, dim_out)``: the sum over each node's incoming edges of the edge's tensor product."""
    E = src.shape[0]
    msg = tensor_product(x.index_select(0, src), edge_attr, weight, problem)
    if msg.shape[0] != E:  # E == 0 with broadcast edge inputs gives one row
        msg = msg.expand(E, -1)
    # Out of place: under torch.vmap, new_zeros is unbatched and an in-place add of batched
    # messages into it fails.
    return msg.new_zeros(num_nodes, msg.shape[1]).index_add(0, dst, msg)
