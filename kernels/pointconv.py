r"""Triton kernels for the fused PointConv operator of LieConv (``equiops.ops.pointconv``).

Semantics: :mod:`equiops.reference.pointconv`. For each query ``g = (b, q)`` with
neighbours ``k`` (point ``idx[g, k]`` of batch ``b``, valid where ``mask[g, k]``)::

    P[g, c, i] = sum_k mask penult[g, k, c] values[b, idx[g, k], i]
    out[g]     = W P[g].flatten() + bias        (/ max(1, count[g]) with mean)

Launchers (the interface of ``equiops.ops.pointconv._cuda_forward`` / ``_cuda_backward``):

* :func:`pointconv_forward` ``(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean)``
  -> ``out (B, m, co)``.
* :func:`pointconv_backward` ``(grad_out, penult, values, nbhd_idx, nbhd_mask, weight,
  bias, mean, deterministic=False)`` -> ``(grad_penult, grad_values, grad_weight,
  grad_bias)`` (``grad_bias`` None without bias).

Kernel design. Queries are flattened to ``Q = B * m`` rows; a program owns ``BQ = 16``
of them (``tl.dot``'s smallest M). Nothing of size ``(Q, K, ci)`` or ``(Q, C * ci)`` is
written by the forward: the partials live in registers, one chunk of their columns at a
time.

* Forward, grid ``(cdiv(Q, BQ), cdiv(co, BO))``: the ``C * ci`` columns of the partials are
  taken in chunks of ``CC`` channels ``c`` x ``BI`` value columns ``i`` (``CC * BI <= 128``:
  ``tl.dot``'s K). Per chunk the program loops over the ``K`` neighbours: it gathers the
  ``[BQ, BI]`` value rows through ``nbhd_idx`` and the ``[BQ, CC]`` penult entries (both
  masked loads: masked neighbours read nothing) and accumulates their outer products in a
  ``[BQ, CC, BI]`` register tile; then one ``tl.dot`` of the tile (as ``[BQ, CC * BI]``)
  with the matching ``[CC * BI, BO]`` block of ``W^T`` into the ``[BQ, BO]`` output
  accumulator. Bias and the mean's ``1 / max(1, count)`` at the end; one store per output.
  No atomics: bitwise reproducible.
* Backward, weight and bias gradients, grid ``(chunks, cdiv(co, BO), G)``: program ``(j,
  o, g)`` recomputes chunk ``j`` of the partials for the query blocks ``g, g + G, ...``
  and accumulates ``dO'^T P`` (``dO' = grad_out / count`` with mean) in a ``[BO, CC *
  BI]`` register tile; each program writes its tile to row ``g`` of a ``(G, co, C * ci)``
  buffer (bias: ``(G, co)``), summed over ``g`` afterwards by ``torch.sum``: fixed order,
  deterministic.
* Backward, penult and values gradients, grid ``(cdiv(Q, BQ), cdiv(ci, BI2))``: a
  program computes ``dP = dO' W`` for its queries, all ``C`` channels and ``BI2`` value
  columns (``[BQ, BC * BI2]``, ``tl.dot`` over ``co`` in blocks of ``BO``), then loops over
  the neighbours: ``grad_penult[g, k, c] = mask sum_i dP[g, c, i] values[idx, i]`` (a
  plain store when one value block covers ``ci``; else per-block partials summed by
  ``torch.sum`` when deterministic, atomic adds otherwise), and the neighbour's values
  gradient row ``mask sum_c dP[g, c, i] penult[g, k, c]``:

  - ``deterministic=False``: ``tl.atomic_add`` into ``grad_values[b, idx]``; NOT bitwise
    reproducible (the order of the adds at a point varies run to run);
  - ``deterministic=True``: stored to a transient ``(Q * K, ci)`` buffer (the only
    ``(m K)``-sized tensor), then summed per source point ``b * n + idx`` by the
    deterministic CSR segment sum of :mod:`equiops.kernels.segment` over the valid
    neighbours sorted by source point (a stable ``torch.sort``).

Precision: float32 and float64 compute in their own type; ``tl.dot`` with
``input_precision="ieee"`` (no TF32) and ``out_dtype`` the input type. With
:data:`FP64_DOT` false, float64 products use a broadcast multiply-and-sum instead of
``tl.dot``. Block sizes are chosen from the shapes (:func:`_blocks`; 4 warps, 8 for the
input-gradient kernel when its ``dP`` tile has >= 256 columns), not from timings or
compiler resource reports: none of these kernels has run on a GPU yet (only under the
interpreter), so register spills at wide ``C * ci`` are possible.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._dot import mm

__all__ = ["pointconv_forward", "pointconv_backward", "FP64_DOT", "BLOCK_Q"]

# float64 products through tl.dot (True) or a broadcast multiply-and-sum (False).
FP64_DOT = True
# Queries per program (a power of two >= 16: tl.dot's smallest M).
BLOCK_Q = 16
# Programs wanted in the weight-gradient grid (query groups G fill it up), and the cap
# on its partial buffer, G x co x C*ci elements.
_TARGET_PROGRAMS = 512
_PARTIAL_ELEMS = 1 << 24

_DTYPES = (torch.float32, torch.float64)


@triton.jit
def _counts(mask_ptr, rows, qmask, K, BQ: tl.constexpr):
    """``max(1, number of valid neighbours)`` per query, as float32."""
    cnt = tl.zeros([BQ], dtype=tl.float32)
    for k in range(K):
        cnt += (tl.load(mask_ptr + rows * K + k, mask=qmask, other=0) != 0).to(tl.float32)
    return tl.maximum(cnt, 1.0)


@triton.jit
def _columns(c0, i0, C, ci, CC: tl.constexpr, BI: tl.constexpr):
    """The ``[CC * BI]`` weight columns ``c * ci + i`` of a chunk and their validity."""
    cc = c0 + tl.arange(0, CC)
    ii = i0 + tl.arange(0, BI)
    col = tl.reshape(cc[:, None] * ci + ii[None, :], [CC * BI])
    ok = tl.reshape((cc < C)[:, None] & (ii < ci)[None, :], [CC * BI])
    return col, ok


@triton.jit
def _partials(pen_ptr, val_ptr, idx_ptr, mask_ptr, rows, qmask, vbase, c0, i0, K, C, ci,
              BQ: tl.constexpr, CC: tl.constexpr, BI: tl.constexpr):
    """Chunk ``(c0, i0)`` of the queries' partials, ``[BQ, CC * BI]`` (column ``c * BI + i``)."""
    cc = c0 + tl.arange(0, CC)
    ii = i0 + tl.arange(0, BI)
    cok = cc < C
    iok = ii < ci
    part = tl.zeros([BQ, CC, BI], dtype=pen_ptr.dtype.element_ty)
    for k in range(K):
        e = rows * K + k
        valid = (tl.load(mask_ptr + e, mask=qmask, other=0) != 0) & qmask
        j = tl.load(idx_ptr + e, mask=valid, other=0)
        p = tl.load(pen_ptr + e[:, None] * C + cc[None, :], mask=valid[:, None] & cok[None, :], other=0.0)
        v = tl.load(val_ptr + (vbase + j)[:, None] * ci + ii[None, :], mask=valid[:, None] & iok[None, :], other=0.0)
        part += p[:, :, None] * v[:, None, :]
    return tl.reshape(part, [BQ, CC * BI])


@triton.jit
def _forward_kernel(
    pen_ptr, val_ptr, idx_ptr, mask_ptr, w_ptr, b_ptr, out_ptr,
    Q, m, n, K, C, ci, co,
    HAS_BIAS: tl.constexpr, MEAN: tl.constexpr, BQ: tl.constexpr, CC: tl.constexpr, BI: tl.constexpr,
    BO: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0).to(tl.int64) * BQ + tl.arange(0, BQ)
    qmask = rows < Q
    vbase = (rows // m) * n
    oc = tl.program_id(1) * BO + tl.arange(0, BO)
    omask = oc < co
    acc = tl.zeros([BQ, BO], dtype=w_ptr.dtype.element_ty)
    for c0 in range(0, C, CC):
        for i0 in range(0, ci, BI):
            part = _partials(pen_ptr, val_ptr, idx_ptr, mask_ptr, rows, qmask, vbase, c0, i0, K, C, ci, BQ, CC, BI)
            col, ok = _columns(c0, i0, C, ci, CC, BI)
            wt = tl.load(w_ptr + oc[None, :].to(tl.int64) * (C * ci) + col[:, None],
                         mask=ok[:, None] & omask[None, :], other=0.0)
            acc += mm(part, wt, DOT)
    if HAS_BIAS:
        acc += tl.load(b_ptr + oc, mask=omask, other=0.0)[None, :]
    if MEAN:
        acc = acc / _counts(mask_ptr, rows, qmask, K, BQ).to(acc.dtype)[:, None]
    tl.store(out_ptr + rows[:, None] * co + oc[None, :], acc, mask=qmask[:, None] & omask[None, :])


@triton.jit
def _weight_grad_kernel(
    go_ptr, pen_ptr, val_ptr, idx_ptr, mask_ptr, pw_ptr, pb_ptr,
    Q, m, n, K, C, ci, co, NQB, G, NI,
    MEAN: tl.constexpr, BQ: tl.constexpr, CC: tl.constexpr, BI: tl.constexpr, BO: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    chunk = tl.program_id(0)
    c0 = (chunk // NI) * CC
    i0 = (chunk % NI) * BI
    oc = tl.program_id(1) * BO + tl.arange(0, BO)
    omask = oc < co
    grp = tl.program_id(2)
    dt = pen_ptr.dtype.element_ty
    acc = tl.zeros([BO, CC * BI], dtype=dt)
    accb = tl.zeros([BO], dtype=dt)
    for qb in range(grp, NQB, G):
        rows = (tl.zeros([BQ], tl.int64) + qb) * BQ + tl.arange(0, BQ)
        qmask = rows < Q
        vbase = (rows // m) * n
        part = _partials(pen_ptr, val_ptr, idx_ptr, mask_ptr, rows, qmask, vbase, c0, i0, K, C, ci, BQ, CC, BI)
        dout = tl.load(go_ptr + rows[:, None] * co + oc[None, :], mask=qmask[:, None] & omask[None, :], other=0.0)
        if MEAN:
            dout = dout / _counts(mask_ptr, rows, qmask, K, BQ).to(dt)[:, None]
        acc += mm(tl.trans(dout), part, DOT)
        accb += tl.sum(dout, axis=0)
    col, ok = _columns(c0, i0, C, ci, CC, BI)
    base = grp.to(tl.int64) * co * (C * ci)
    tl.store(pw_ptr + base + oc[:, None].to(tl.int64) * (C * ci) + col[None, :], acc, mask=omask[:, None] & ok[None, :])
    first = (tl.zeros([BO], dtype=tl.int32) + chunk) == 0  # one chunk writes the bias gradient
    tl.store(pb_ptr + grp * co + oc, accb, mask=omask & first)


@triton.jit
def _input_grad_kernel(
    go_ptr, pen_ptr, val_ptr, idx_ptr, mask_ptr, w_ptr, gp_ptr, gv_ptr, buf_ptr,
    Q, m, n, K, C, ci, co,
    MEAN: tl.constexpr, BQ: tl.constexpr, BC: tl.constexpr, BI: tl.constexpr, BO: tl.constexpr,
    GP_MODE: tl.constexpr, ATOMIC_V: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    # GP_MODE: 0 store grad_penult, 1 store the block's partial (row pid_i of gp_ptr), 2 atomic add.
    rows = tl.program_id(0).to(tl.int64) * BQ + tl.arange(0, BQ)
    qmask = rows < Q
    vbase = (rows // m) * n
    pid_i = tl.program_id(1)
    i0 = pid_i * BI
    dt = pen_ptr.dtype.element_ty
    cc = tl.arange(0, BC)
    ii = i0 + tl.arange(0, BI)
    cok = cc < C
    iok = ii < ci
    col, ok = _columns(0, i0, C, ci, BC, BI)
    # dP (all channels, this block of value columns) = dO' W.
    if MEAN:
        inv = 1.0 / _counts(mask_ptr, rows, qmask, K, BQ).to(dt)
    dp = tl.zeros([BQ, BC * BI], dtype=dt)
    for o0 in range(0, co, BO):
        oc = o0 + tl.arange(0, BO)
        omask = oc < co
        dout = tl.load(go_ptr + rows[:, None] * co + oc[None, :], mask=qmask[:, None] & omask[None, :], other=0.0)
        if MEAN:
            dout = dout * inv[:, None]
        wc = tl.load(w_ptr + oc[:, None].to(tl.int64) * (C * ci) + col[None, :], mask=omask[:, None] & ok[None, :],
                     other=0.0)
        dp += mm(dout, wc, DOT)
    dp3 = tl.reshape(dp, [BQ, BC, BI])
    for k in range(K):
        e = rows * K + k
        valid = (tl.load(mask_ptr + e, mask=qmask, other=0) != 0) & qmask
        j = tl.load(idx_ptr + e, mask=valid, other=0)
        p = tl.load(pen_ptr + e[:, None] * C + cc[None, :], mask=valid[:, None] & cok[None, :], other=0.0)
        v = tl.load(val_ptr + (vbase + j)[:, None] * ci + ii[None, :], mask=valid[:, None] & iok[None, :], other=0.0)
        gp = tl.sum(dp3 * v[:, None, :], axis=2)  # [BQ, BC]; 0 where masked (v = 0)
        gv = tl.sum(dp3 * p[:, :, None], axis=1)  # [BQ, BI]; 0 where masked (p = 0)
        pmask = qmask[:, None] & cok[None, :]
        if GP_MODE == 0:
            tl.store(gp_ptr + e[:, None] * C + cc[None, :], gp, mask=pmask)
        elif GP_MODE == 1:
            tl.store(gp_ptr + pid_i.to(tl.int64) * Q * K * C + e[:, None] * C + cc[None, :], gp, mask=pmask)
        else:
            tl.atomic_add(gp_ptr + e[:, None] * C + cc[None, :], gp, mask=valid[:, None] & cok[None, :], sem="relaxed")
        vmask = valid[:, None] & iok[None, :]
        if ATOMIC_V:
            tl.atomic_add(gv_ptr + (vbase + j)[:, None] * ci + ii[None, :], gv, mask=vmask, sem="relaxed")
        else:
            tl.store(buf_ptr + e[:, None] * ci + ii[None, :], gv, mask=vmask)


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------


def _pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def _blocks(C: int, ci: int, co: int):
    """``(CC, BI, BO, BC, BI2)``: forward / weight-gradient chunks of ``CC`` channels x
    ``BI`` value columns (``CC * BI`` in [16, 128]), output blocks of ``BO`` (16 to 64),
    and the input-gradient kernel's ``BC`` (all channels) x ``BI2`` value columns (``BC *
    BI2`` in [16, 512], when C allows)."""
    BI = min(_pow2(ci), 32)
    CC = min(_pow2(C), max(1, 128 // BI))
    if CC * BI < 16:
        BI = 16 // CC
    BO = min(max(16, _pow2(co)), 64)
    BC = _pow2(C)
    BI2 = max(1, min(_pow2(ci), 512 // BC))
    if BC * BI2 < 16:
        BI2 = 16 // BC
    return CC, BI, BO, BC, BI2


def _device_ctx(t: Tensor):
    from contextlib import nullcontext

    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


def _prepare(penult, values, nbhd_idx, nbhd_mask, weight, bias):
    """Checks what the kernels rely on; returns contiguous tensors and the sizes."""
    if penult.dtype not in _DTYPES:
        raise TypeError(f"penult must be float32 or float64, got {penult.dtype}")
    if penult.dim() != 4 or values.dim() != 3 or weight.dim() != 2:
        raise ValueError(f"expected penult (B, m, K, C), values (B, n, ci), weight (co, C * ci), got shapes "
                         f"{tuple(penult.shape)}, {tuple(values.shape)}, {tuple(weight.shape)}")
    B, m, K, C = penult.shape
    n, ci = values.shape[1], values.shape[2]
    co = weight.shape[0]
    if values.shape[0] != B or weight.shape[1] != C * ci or (bias is not None and tuple(bias.shape) != (co,)):
        raise ValueError(f"inconsistent shapes: penult {tuple(penult.shape)}, values {tuple(values.shape)}, "
                         f"weight {tuple(weight.shape)}, bias {None if bias is None else tuple(bias.shape)}")
    for name, t in (("values", values), ("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != penult.dtype or t.device != penult.device):
            raise TypeError(f"{name} must have penult's dtype and device, got {t.dtype} on {t.device}")
    for name, t, dt in (("nbhd_idx", nbhd_idx, torch.int64), ("nbhd_mask", nbhd_mask, torch.bool)):
        if t.dtype != dt or tuple(t.shape) != (B, m, K) or t.device != penult.device:
            raise ValueError(f"{name} must be a {dt} ({B}, {m}, {K}) tensor on {penult.device}, got {t.dtype} "
                             f"{tuple(t.shape)} on {t.device}")
    tensors = (penult.contiguous(), values.contiguous(), nbhd_idx.contiguous(),
               nbhd_mask.contiguous().view(torch.uint8), weight.contiguous(),
               bias.contiguous() if bias is not None else None)
    return tensors, (B, m, n, K, C, ci, co)


def _dot(dtype) -> bool:
    return dtype != torch.float64 or bool(FP64_DOT)


def pointconv_forward(penult: Tensor, values: Tensor, nbhd_idx: Tensor, nbhd_mask: Tensor, weight: Tensor,
                      bias: Optional[Tensor] = None, mean: bool = False) -> Tensor:
    """``out (B, m, co)``; index values are not checked (the caller does)."""
    (penult, values, idx, mask, weight, bias), (B, m, n, K, C, ci, co) = _prepare(
        penult, values, nbhd_idx, nbhd_mask, weight, bias)
    Q = B * m
    out = torch.empty(B, m, co, dtype=penult.dtype, device=penult.device)
    if Q == 0 or co == 0:
        return out
    if C * ci == 0 or K == 0:  # no partials: the bias (divided by 1)
        out.zero_()
        return out + bias if bias is not None else out
    CC, BI, BO, _, _ = _blocks(C, ci, co)
    grid = (triton.cdiv(Q, BLOCK_Q), triton.cdiv(co, BO))
    with _device_ctx(penult):
        _forward_kernel[grid](
            penult, values, idx, mask, weight, bias if bias is not None else weight, out,
            Q, m, n, K, C, ci, co,
            HAS_BIAS=bias is not None, MEAN=bool(mean), BQ=BLOCK_Q, CC=CC, BI=BI, BO=BO, DOT=_dot(penult.dtype),
            num_warps=4,
        )  # fmt: skip
    return out


def pointconv_backward(grad_out: Tensor, penult: Tensor, values: Tensor, nbhd_idx: Tensor, nbhd_mask: Tensor,
                       weight: Tensor, bias: Optional[Tensor] = None, mean: bool = False, *,
                       deterministic: bool = False) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """``(grad_penult, grad_values, grad_weight, grad_bias)`` of ``<grad_out, out>``
    (``grad_bias`` None without bias). ``deterministic``: the values gradient (and a
    split penult gradient) by sort-and-reduce instead of atomic adds."""
    (penult, values, idx, mask, weight, bias), (B, m, n, K, C, ci, co) = _prepare(
        penult, values, nbhd_idx, nbhd_mask, weight, bias)
    dtype, dev = penult.dtype, penult.device
    if tuple(grad_out.shape) != (B, m, co) or grad_out.dtype != dtype or grad_out.device != dev:
        raise ValueError(f"grad_out must be a {dtype} ({B}, {m}, {co}) tensor on {dev}, got {grad_out.dtype} "
                         f"{tuple(grad_out.shape)} on {grad_out.device}")
    grad_out = grad_out.contiguous()
    Q, CI = B * m, C * ci
    if Q == 0 or K == 0 or CI == 0 or co == 0:  # no partials: only the bias has a gradient (grad_out, count 1)
        g_bias = grad_out.sum((0, 1)) if bias is not None else None
        return torch.zeros_like(penult), torch.zeros_like(values), torch.zeros_like(weight), g_bias
    CC, BI, BO, BC, BI2 = _blocks(C, ci, co)
    dot = _dot(dtype)
    nqb = triton.cdiv(Q, BLOCK_Q)
    # Weight gradient: per-group partials.
    NI = triton.cdiv(ci, BI)
    chunks = triton.cdiv(C, CC) * NI
    nob = triton.cdiv(co, BO)
    G = max(1, min(nqb, triton.cdiv(_TARGET_PROGRAMS, chunks * nob), max(1, _PARTIAL_ELEMS // (co * CI))))
    pw = torch.empty(G, co, CI, dtype=dtype, device=dev)
    pb = torch.empty(G, co, dtype=dtype, device=dev)
    # Penult and values gradients.
    NI2 = triton.cdiv(ci, BI2)
    gp_mode = 0 if NI2 == 1 else (1 if deterministic else 2)
    if gp_mode == 1:
        gp = torch.empty(NI2, B, m, K, C, dtype=dtype, device=dev)
    elif gp_mode == 2:
        gp = torch.zeros(B, m, K, C, dtype=dtype, device=dev)
    else:
        gp = torch.empty(B, m, K, C, dtype=dtype, device=dev)
    buf = torch.empty(Q * K, ci, dtype=dtype, device=dev) if deterministic else None
    gv = torch.zeros(B, n, ci, dtype=dtype, device=dev) if not deterministic else None
    with _device_ctx(penult):
        _weight_grad_kernel[(chunks, nob, G)](
            grad_out, penult, values, idx, mask, pw, pb,
            Q, m, n, K, C, ci, co, nqb, G, NI,
            MEAN=bool(mean), BQ=BLOCK_Q, CC=CC, BI=BI, BO=BO, DOT=dot, num_warps=4,
        )  # fmt: skip
        _input_grad_kernel[(nqb, NI2)](
            grad_out, penult, values, idx, mask, weight, gp, gv if gv is not None else gp,
            buf if buf is not None else gp,
            Q, m, n, K, C, ci, co,
            MEAN=bool(mean), BQ=BLOCK_Q, BC=BC, BI=BI2, BO=BO, GP_MODE=gp_mode, ATOMIC_V=not deterministic,
            DOT=dot, num_warps=8 if BC * BI2 >= 256 else 4,
        )  # fmt: skip
    if gp_mode == 1:
        gp = gp.sum(0)
    if deterministic:
        gv = _sum_rows_by_point(buf, idx, nbhd_mask, B, m, n, K, ci)
    return gp, gv, pw.sum(0), pb.sum(0) if bias is not None else None


def _sum_rows_by_point(buf: Tensor, idx: Tensor, nbhd_mask: Tensor, B: int, m: int, n: int, K: int, ci: int) -> Tensor:
    """``grad_values[b, p] = sum of the rows of the valid neighbours (b, q, k) with
    idx[b, q, k] == p``, in (q, k) order: a stable sort of the valid rows by source point,
    then the deterministic CSR segment sum."""
    from equiops.kernels.segment import segment_sum

    dev = buf.device
    batch = torch.arange(B, device=dev).view(B, 1, 1)
    keys = (batch * n + idx).flatten()
    valid = nbhd_mask.flatten().nonzero().flatten()
    order = torch.sort(keys[valid], stable=True)
    perm = valid[order.indices]
    indptr = torch.searchsorted(order.values, torch.arange(B * n + 1, device=dev))
    out = segment_sum(buf.view(1, B * m * K, ci), indptr.view(1, -1), perm)
    return out.view(B, n, ci)
