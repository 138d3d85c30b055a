r"""Triton kernels for the fused EGNN message block (``equiops.ops.egnn``).

Semantics: :mod:`equiops.reference.egnn_message`. For each edge ``e`` (receiver
``i = dst[e]``, sender ``j = src[e]``) the two-layer edge MLP, the optional attention
gate and the coordinate MLP give ``m_e (M,)`` and ``t_e (3,)``, summed at the receivers
into ``m_sum (n, M)`` and ``t_sum (n, 3)``. Launchers (the interface of
``equiops.ops.egnn._cuda_forward`` / ``_cuda_backward``):

* :func:`message_forward` ``(node_i, node_j, coord, edge_attr, src, dst, dst_perm,
  dst_indptr, <10 weights>, act, coord_norm, tanh, c_clamp, trans_clamp)`` ->
  ``(m_sum, t_sum)``.
* :func:`message_backward` ``(grad_m, grad_t, node_i, ..., dst_perm, dst_indptr,
  src_perm, src_indptr, <10 weights>, <options>)`` -> the 14 gradients of ``node_i,
  node_j, coord, edge_attr`` and the ten weights (None for an absent weight).

A view is ``(perm, indptr)``: ``indptr (n + 1,)`` the CSR offsets of the edges sorted by
that endpoint, ``perm (E,)`` the edge ids in that order, or None when the edges are
already in that order. No view (indptr None): the atomic variant.

Kernel design. Widths ``H1, M, Hc, D`` are compile-time constants, padded to powers of
two of at least 16 (``tl.dot``'s smallest block) with masked loads; padded columns hold
exact zeros all the way through (``act(0) = 0`` for silu and relu, padded weight rows
and columns load as 0). Every per-edge quantity lives in registers of one program:

* Forward, deterministic (dst view given): grid ``cdiv(n, BN)``. A program owns ``BN``
  receivers, loads their ``indptr`` ranges and loops ``step`` over the block's largest
  in-degree; at each step, every receiver with ``step < degree`` takes its ``step``-th
  incoming edge (CSR order) - a ``[BN]`` vector of edges - and computes its message in
  registers: gather ``node_i[dst]``, ``node_j[src]``, ``coord`` rows, ``z1 = ... + r
  w_radial + edge_attr @ w_edge^T`` (``tl.dot``), ``act``, ``tl.dot`` with ``w2^T``,
  ``act``, gate, ``tl.dot`` with ``wc1^T``, ``act``, ``. wc2``, the coordinate term; adds
  them to ``[BN, M]`` / ``[BN]`` accumulators; one store per receiver at the end
  (isolated receivers store zeros). No atomics, and each receiver's sum runs in CSR
  order in one program: bitwise reproducible run to run.
* Forward, atomic (no view): grid ``cdiv(E, BE)`` edge blocks; each program computes
  its ``BE`` edges' messages and ``tl.atomic_add``\ s them into ``m_sum[dst]`` /
  ``t_sum[dst]`` (zero-initialised). Not bitwise deterministic.
* Backward, one edge-parallel kernel, flash-attention style: grid ``P = min(cdiv(E,
  BE), REDUCE_PROGRAMS)`` programs; program ``p`` loops over edge blocks ``p, p + P,
  ...``, recomputes the block's forward quantities in registers, gathers ``grad_m[dst]``
  / ``grad_t[dst]`` and back-propagates to ``dz1 (BE, H1)`` (the gradient w.r.t. ``z1``)
  and ``dd (BE, 3)`` (w.r.t. ``d = coord[dst] - coord[src]``). It writes

  - ``grad_edge_attr = dz1 @ w_edge`` per edge (plain stores);
  - the weight gradients (``w_radial``, ``w_edge``, ``w2``, ``b2``, ``w_att``, ``b_att``,
    ``wc1``, ``bc1``, ``wc2``, ``bc2``) as per-program partial sums, one row of a ``(P,
    size)`` buffer per program, summed over programs afterwards by ``torch.sum``: a
    fixed order, deterministic in both variants;
  - node gradients: with a view (deterministic), the per-edge ``[dz1 | dd]`` rows into a
    transient ``(E, H1 + 3)`` buffer, then reduced per receiver (``dst`` view: ``grad
    node_i`` and ``+dd``) and per sender (``src`` view: ``grad node_j`` and ``-dd``) by
    the deterministic CSR segment sum of :mod:`equiops.kernels.segment`; without a view,
    ``tl.atomic_add`` of ``dz1`` into ``grad node_i[dst]`` / ``grad node_j[src]`` and of
    ``+-dd`` into ``grad coord`` (each endpoint decided separately).

  A self-loop's ``dd`` is dropped: its ``d = coord[i] - coord[i]`` is identically 0, so
  its coordinate gradient is exactly 0, while adding ``+dd`` and ``-dd`` at the node
  would cancel terms as large as ``|grad_t c| / 1e-8`` ("detached" / "clamped" modes),
  leaving a rounding residue (as autograd through the reference does), or NaN in
  "plus_one" mode (autograd's ``sqrt`` at 0; for ``d = 0`` between distinct nodes the
  kernels use the derivative's value there, ``I / (rho + 1)``, without the NaN).

Launch configuration (:func:`_config`): 16 receivers per CSR forward program, 32 edges
per atomic forward block (16 when a width exceeds 64), 16 edges per backward block; 8
warps when a padded width is >= 64, else 4 (keywords ``block_nodes`` / ``block_edges``
override the rows, powers of two >= 16). Chosen from compile-only resource reports for
sm_90 (ptxas), not from timings: the weight tiles are loaded once per program (Triton
keeps them in shared memory), which for float32 fits widths up to 128 (backward ~195
KB of shared memory at width 128) and for float64 widths up to 64 (~175 KB); float64
at width 128 exceeds the H100's 227 KB and fails to launch. At width 128 the backward
spills registers.

Precision: float32 and float64 compute in their own type; ``tl.dot`` with
``input_precision="ieee"`` (no TF32: float32 products run on FMA units, not tensor
cores; float64 ones on the float64 MMA) and ``out_dtype`` the input type. With
:data:`FP64_DOT` false, float64 products use a broadcast multiply-and-sum instead of
``tl.dot`` (a fallback for a compiler without float64 ``tl.dot``). The clamp bounds are
float64 kernel arguments, rounded to the compute dtype in the kernel.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._dot import mm

__all__ = ["message_forward", "message_backward", "REDUCE_PROGRAMS", "FP64_DOT"]

# Programs of the backward (each loops over edge blocks and keeps one row of partial
# weight-gradient sums): bounds the partial buffers at REDUCE_PROGRAMS x weights.
REDUCE_PROGRAMS = 256
# float64 products through tl.dot (True) or a broadcast multiply-and-sum (False).
FP64_DOT = True
# Rows per program (powers of two >= 16; see _config).
BLOCK_NODES = 16

_ACT = {"silu": 0, "relu": 1}
_NORM = {"none": 0, "detached": 1, "plus_one": 2, "clamped": 3}
_DTYPES = (torch.float32, torch.float64)


# --------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------




@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == 0:
        return z * tl.sigmoid(z)
    else:
        return tl.maximum(z, 0.0)


@triton.jit
def _dact(z, ACT: tl.constexpr):
    """``act'(z)`` (relu: 0 at 0, as torch)."""
    if ACT == 0:
        s = tl.sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    else:
        return tl.where(z > 0.0, 1.0, 0.0).to(z.dtype)


@triton.jit
def _like(x, t):
    """The runtime scalar ``x`` (a float64 kernel argument) as a tensor of ``t``'s shape and dtype."""
    return (x + tl.zeros_like(t)).to(t.dtype)


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0.0, -t, t)


@triton.jit
def _mat(ptr, R: tl.constexpr, C: tl.constexpr, NR: tl.constexpr, NC: tl.constexpr):
    """The row-major ``(NR, NC)`` matrix at ``ptr`` as an ``[R, C]`` tile, zero-padded."""
    j = tl.arange(0, R)
    k = tl.arange(0, C)
    return tl.load(ptr + j[:, None] * NC + k[None, :], mask=(j < NR)[:, None] & (k < NC)[None, :], other=0.0)


@triton.jit
def _vec(ptr, B: tl.constexpr, N: tl.constexpr):
    c = tl.arange(0, B)
    return tl.load(ptr + c, mask=c < N, other=0.0)


@triton.jit
def _edges(dsti, srci, eid, rmask, ni_ptr, nj_ptr, x_ptr, ea_ptr,
           wrad, wedge_t, w2_t, b2, watt, batt, wc1_t, bc1, wc2, bc2, c_clamp,
           H1: tl.constexpr, D: tl.constexpr, BH1: tl.constexpr, BD: tl.constexpr,
           ACT: tl.constexpr, HAS_ATT: tl.constexpr, HAS_BC2: tl.constexpr, TANH: tl.constexpr,
           CCLAMP: tl.constexpr, DOT: tl.constexpr):
    """The forward quantities of a ``[R]`` vector of edges (rows where ``rmask`` is false
    load zeros; their results are finite but meaningless)."""
    ch = tl.arange(0, BH1)
    hmask = rmask[:, None] & (ch < H1)[None, :]
    d0 = tl.load(x_ptr + dsti * 3, mask=rmask, other=0.0) - tl.load(x_ptr + srci * 3, mask=rmask, other=0.0)
    d1 = tl.load(x_ptr + dsti * 3 + 1, mask=rmask, other=0.0) - tl.load(x_ptr + srci * 3 + 1, mask=rmask, other=0.0)
    d2 = tl.load(x_ptr + dsti * 3 + 2, mask=rmask, other=0.0) - tl.load(x_ptr + srci * 3 + 2, mask=rmask, other=0.0)
    r = d0 * d0 + d1 * d1 + d2 * d2
    z1 = tl.load(ni_ptr + dsti[:, None] * H1 + ch[None, :], mask=hmask, other=0.0)
    z1 += tl.load(nj_ptr + srci[:, None] * H1 + ch[None, :], mask=hmask, other=0.0)
    z1 += r[:, None] * wrad[None, :]
    if D > 0:
        cd = tl.arange(0, BD)
        ea = tl.load(ea_ptr + eid[:, None] * D + cd[None, :], mask=rmask[:, None] & (cd < D)[None, :], other=0.0)
        z1 += mm(ea, wedge_t, DOT)
    a1 = _act(z1, ACT)
    z2 = mm(a1, w2_t, DOT) + b2[None, :]
    m0 = _act(z2, ACT)
    if HAS_ATT:
        s = tl.sigmoid(tl.sum(m0 * watt[None, :], axis=1) + batt)
        m = m0 * s[:, None]
    else:
        s = r  # unused
        m = m0
    z3 = mm(m, wc1_t, DOT) + bc1[None, :]
    a3 = _act(z3, ACT)
    ct = tl.sum(a3 * wc2[None, :], axis=1)
    if HAS_BC2:
        ct += bc2
    if TANH:
        ct = _tanh(ct)
    c = ct
    if CCLAMP:
        cc = _like(c_clamp, ct)
        c = tl.minimum(tl.maximum(c, -cc), cc)
    return d0, d1, d2, r, z1, a1, z2, m0, s, m, z3, a3, ct, c


@triton.jit
def _unit(d0, d1, d2, r, NORM: tl.constexpr):
    """``u = d / den`` of the coordinate norm (``den`` per row)."""
    if NORM == 0:
        return d0, d1, d2
    else:
        if NORM == 1:
            den = tl.sqrt(r) + 1e-8
        elif NORM == 2:
            den = tl.sqrt(r) + 1.0
        else:
            den = tl.maximum(tl.sqrt(r), 1e-8)
        return d0 / den, d1 / den, d2 / den


@triton.jit
def _tclamp(p, tc, TCLAMP: tl.constexpr):
    if TCLAMP:
        return tl.minimum(tl.maximum(p, -tc), tc)
    else:
        return p


@triton.jit
def _tmask(g, p, tc, TCLAMP: tl.constexpr):
    """Gradient through the per-component clamp (zero where clamped)."""
    if TCLAMP:
        return tl.where((p >= -tc) & (p <= tc), g, 0.0)
    else:
        return g


@triton.jit
def _unit_backward(g0, g1, g2, d0, d1, d2, r, NORM: tl.constexpr):
    """The gradient w.r.t. ``d`` from ``g = dL/du``."""
    if NORM == 0:
        return g0, g1, g2
    elif NORM == 1:  # the norm is detached
        den = tl.sqrt(r) + 1e-8
        return g0 / den, g1 / den, g2 / den
    elif NORM == 2:  # u = d / (rho + 1): g / (rho + 1) - d (g . d) / (rho (rho + 1)^2), 0 at rho = 0
        rho = tl.sqrt(r)
        den = rho + 1.0
        pos = rho > 0.0
        coef = tl.where(pos, (g0 * d0 + g1 * d1 + g2 * d2) / (tl.where(pos, rho, 1.0) * den * den), 0.0)
        return g0 / den - d0 * coef, g1 / den - d1 * coef, g2 / den - d2 * coef
    else:  # u = d / max(rho, eps): the full derivative where rho >= eps, else g / eps
        rho = tl.sqrt(r)
        big = rho >= 1e-8
        den = tl.maximum(rho, 1e-8)
        coef = tl.where(big, (g0 * d0 + g1 * d1 + g2 * d2) / (den * den * den), 0.0)
        return g0 / den - d0 * coef, g1 / den - d1 * coef, g2 / den - d2 * coef


# --------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------


@triton.jit
def _weights(wrad_ptr, wedge_ptr, w2_ptr, b2_ptr, watt_ptr, batt_ptr, wc1_ptr, bc1_ptr, wc2_ptr, bc2_ptr,
             H1: tl.constexpr, M: tl.constexpr, HC: tl.constexpr, D: tl.constexpr, BH1: tl.constexpr,
             BM: tl.constexpr, BHC: tl.constexpr, BD: tl.constexpr, HAS_ATT: tl.constexpr, HAS_BC2: tl.constexpr):
    """Every weight of the block, padded and masked (absent gate: w_att = b2 unused, b_att = bc2 = 0)."""
    wrad = _vec(wrad_ptr, BH1, H1)
    wedge = _mat(wedge_ptr, BH1, BD, H1, D)
    w2 = _mat(w2_ptr, BM, BH1, M, H1)
    b2 = _vec(b2_ptr, BM, M)
    wc1 = _mat(wc1_ptr, BHC, BM, HC, M)
    bc1 = _vec(bc1_ptr, BHC, HC)
    wc2 = _vec(wc2_ptr, BHC, HC)
    if HAS_ATT:
        watt = _vec(watt_ptr, BM, M)
        batt = tl.load(batt_ptr)
    else:
        watt = b2
        batt = 0.0
    if HAS_BC2:
        bc2 = tl.load(bc2_ptr)
    else:
        bc2 = 0.0
    return wrad, wedge, w2, b2, wc1, bc1, wc2, watt, batt, bc2


@triton.jit
def _forward_kernel(
    ni_ptr, nj_ptr, x_ptr, ea_ptr, src_ptr, dst_ptr, perm_ptr, indptr_ptr,
    wrad_ptr, wedge_ptr, w2_ptr, b2_ptr, watt_ptr, batt_ptr, wc1_ptr, bc1_ptr, wc2_ptr, bc2_ptr,
    m_ptr, t_ptr, E, n, c_clamp: tl.float64, trans_clamp: tl.float64,
    H1: tl.constexpr, M: tl.constexpr, HC: tl.constexpr, D: tl.constexpr,
    BH1: tl.constexpr, BM: tl.constexpr, BHC: tl.constexpr, BD: tl.constexpr, BR: tl.constexpr,
    ACT: tl.constexpr, NORM: tl.constexpr, HAS_ATT: tl.constexpr, HAS_BC2: tl.constexpr, TANH: tl.constexpr,
    CCLAMP: tl.constexpr, TCLAMP: tl.constexpr, CSR: tl.constexpr, HAS_PERM: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    wrad, wedge, w2, b2, wc1, bc1, wc2, watt, batt, bc2 = _weights(
        wrad_ptr, wedge_ptr, w2_ptr, b2_ptr, watt_ptr, batt_ptr, wc1_ptr, bc1_ptr, wc2_ptr, bc2_ptr,
        H1, M, HC, D, BH1, BM, BHC, BD, HAS_ATT, HAS_BC2)
    wedge_t = tl.trans(wedge)
    w2_t = tl.trans(w2)
    wc1_t = tl.trans(wc1)
    cm = tl.arange(0, BM)
    rows = pid * BR + tl.arange(0, BR)
    if CSR:
        nmask = rows < n
        beg = tl.load(indptr_ptr + rows, mask=nmask, other=0)
        deg = tl.load(indptr_ptr + rows + 1, mask=nmask, other=0) - beg
        acc_m = tl.zeros([BR, BM], dtype=w2_t.dtype)
        acc0 = tl.zeros([BR], dtype=w2_t.dtype)
        acc1 = tl.zeros([BR], dtype=w2_t.dtype)
        acc2 = tl.zeros([BR], dtype=w2_t.dtype)
        tc = _like(trans_clamp, acc0)
        for step in range(0, tl.max(deg, axis=0)):
            rmask = step < deg
            pos = beg + step
            if HAS_PERM:
                eid = tl.load(perm_ptr + pos, mask=rmask, other=0)
            else:
                eid = pos
            srci = tl.load(src_ptr + eid, mask=rmask, other=0)
            d0, d1, d2, r, z1, a1, z2, m0, s, m, z3, a3, ct, c = _edges(
                rows, srci, eid, rmask, ni_ptr, nj_ptr, x_ptr, ea_ptr, wrad, wedge_t, w2_t, b2, watt, batt,
                wc1_t, bc1, wc2, bc2, c_clamp, H1, D, BH1, BD, ACT, HAS_ATT, HAS_BC2, TANH, CCLAMP, DOT)
            u0, u1, u2 = _unit(d0, d1, d2, r, NORM)
            acc_m += tl.where(rmask[:, None], m, 0.0)
            acc0 += tl.where(rmask, _tclamp(u0 * c, tc, TCLAMP), 0.0)
            acc1 += tl.where(rmask, _tclamp(u1 * c, tc, TCLAMP), 0.0)
            acc2 += tl.where(rmask, _tclamp(u2 * c, tc, TCLAMP), 0.0)
        tl.store(m_ptr + rows[:, None] * M + cm[None, :], acc_m, mask=nmask[:, None] & (cm < M)[None, :])
        tl.store(t_ptr + rows * 3, acc0, mask=nmask)
        tl.store(t_ptr + rows * 3 + 1, acc1, mask=nmask)
        tl.store(t_ptr + rows * 3 + 2, acc2, mask=nmask)
    else:
        rmask = rows < E
        srci = tl.load(src_ptr + rows, mask=rmask, other=0)
        dsti = tl.load(dst_ptr + rows, mask=rmask, other=0)
        d0, d1, d2, r, z1, a1, z2, m0, s, m, z3, a3, ct, c = _edges(
            dsti, srci, rows, rmask, ni_ptr, nj_ptr, x_ptr, ea_ptr, wrad, wedge_t, w2_t, b2, watt, batt,
            wc1_t, bc1, wc2, bc2, c_clamp, H1, D, BH1, BD, ACT, HAS_ATT, HAS_BC2, TANH, CCLAMP, DOT)
        u0, u1, u2 = _unit(d0, d1, d2, r, NORM)
        tc = _like(trans_clamp, r)
        tl.atomic_add(m_ptr + dsti[:, None] * M + cm[None, :], m, mask=rmask[:, None] & (cm < M)[None, :], sem="relaxed")
        tl.atomic_add(t_ptr + dsti * 3, _tclamp(u0 * c, tc, TCLAMP), mask=rmask, sem="relaxed")
        tl.atomic_add(t_ptr + dsti * 3 + 1, _tclamp(u1 * c, tc, TCLAMP), mask=rmask, sem="relaxed")
        tl.atomic_add(t_ptr + dsti * 3 + 2, _tclamp(u2 * c, tc, TCLAMP), mask=rmask, sem="relaxed")


@triton.jit
def _backward_kernel(
    gm_ptr, gt_ptr, ni_ptr, nj_ptr, x_ptr, ea_ptr, src_ptr, dst_ptr,
    wrad_ptr, wedge_ptr, w2_ptr, b2_ptr, watt_ptr, batt_ptr, wc1_ptr, bc1_ptr, wc2_ptr, bc2_ptr,
    buf_ptr, gni_ptr, gnj_ptr, gx_ptr, gea_ptr,
    pwrad, pwedge, pw2, pb2, pwatt, pbatt, pwc1, pbc1, pwc2, pbc2,
    E, NB, P, c_clamp: tl.float64, trans_clamp: tl.float64,
    H1: tl.constexpr, M: tl.constexpr, HC: tl.constexpr, D: tl.constexpr,
    BH1: tl.constexpr, BM: tl.constexpr, BHC: tl.constexpr, BD: tl.constexpr, BR: tl.constexpr,
    ACT: tl.constexpr, NORM: tl.constexpr, HAS_ATT: tl.constexpr, HAS_BC2: tl.constexpr, TANH: tl.constexpr,
    CCLAMP: tl.constexpr, TCLAMP: tl.constexpr, ATOMIC_DST: tl.constexpr, ATOMIC_SRC: tl.constexpr,
    STORE_BUF: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    ch = tl.arange(0, BH1)
    cm = tl.arange(0, BM)
    chc = tl.arange(0, BHC)
    cd = tl.arange(0, BD)
    # One tile per weight matrix, transposed in registers (one shared-memory copy each).
    wrad, wedge, w2, b2, wc1, bc1, wc2, watt, batt, bc2 = _weights(
        wrad_ptr, wedge_ptr, w2_ptr, b2_ptr, watt_ptr, batt_ptr, wc1_ptr, bc1_ptr, wc2_ptr, bc2_ptr,
        H1, M, HC, D, BH1, BM, BHC, BD, HAS_ATT, HAS_BC2)
    wedge_t = tl.trans(wedge)
    w2_t = tl.trans(w2)
    wc1_t = tl.trans(wc1)
    dt = w2.dtype
    acc_wrad = tl.zeros([BH1], dtype=dt)
    acc_wedge = tl.zeros([BH1, BD], dtype=dt)
    acc_w2 = tl.zeros([BM, BH1], dtype=dt)
    acc_b2 = tl.zeros([BM], dtype=dt)
    acc_watt = tl.zeros([BM], dtype=dt)
    acc_batt = tl.zeros([BR], dtype=dt)
    acc_wc1 = tl.zeros([BHC, BM], dtype=dt)
    acc_bc1 = tl.zeros([BHC], dtype=dt)
    acc_wc2 = tl.zeros([BHC], dtype=dt)
    acc_bc2 = tl.zeros([BR], dtype=dt)
    for blk in range(pid, NB, P):
        rows = (tl.zeros([BR], tl.int64) + blk) * BR + tl.arange(0, BR)
        rmask = rows < E
        hmask = rmask[:, None] & (ch < H1)[None, :]
        srci = tl.load(src_ptr + rows, mask=rmask, other=0)
        dsti = tl.load(dst_ptr + rows, mask=rmask, other=0)
        d0, d1, d2, r, z1, a1, z2, m0, s, m, z3, a3, ct, c = _edges(
            dsti, srci, rows, rmask, ni_ptr, nj_ptr, x_ptr, ea_ptr, wrad, wedge_t, w2_t, b2, watt, batt,
            wc1_t, bc1, wc2, bc2, c_clamp, H1, D, BH1, BD, ACT, HAS_ATT, HAS_BC2, TANH, CCLAMP, DOT)
        u0, u1, u2 = _unit(d0, d1, d2, r, NORM)
        tc = _like(trans_clamp, r)
        # Cotangents at the receivers (zero on masked rows: every gradient below vanishes there).
        gm = tl.load(gm_ptr + dsti[:, None] * M + cm[None, :], mask=rmask[:, None] & (cm < M)[None, :], other=0.0)
        g0 = _tmask(tl.load(gt_ptr + dsti * 3, mask=rmask, other=0.0), u0 * c, tc, TCLAMP)
        g1 = _tmask(tl.load(gt_ptr + dsti * 3 + 1, mask=rmask, other=0.0), u1 * c, tc, TCLAMP)
        g2 = _tmask(tl.load(gt_ptr + dsti * 3 + 2, mask=rmask, other=0.0), u2 * c, tc, TCLAMP)
        # t = u c
        gc = g0 * u0 + g1 * u1 + g2 * u2
        gd0, gd1, gd2 = _unit_backward(g0 * c, g1 * c, g2 * c, d0, d1, d2, r, NORM)
        if CCLAMP:
            cc = _like(c_clamp, ct)
            gc = tl.where((ct >= -cc) & (ct <= cc), gc, 0.0)
        if TANH:
            gc = gc * (1.0 - ct * ct)
        # c = wc2 . act(z3) + bc2, z3 = m @ wc1^T + bc1
        acc_bc2 += gc
        acc_wc2 += tl.sum(gc[:, None] * a3, axis=0)
        gz3 = gc[:, None] * wc2[None, :] * _dact(z3, ACT)
        acc_bc1 += tl.sum(gz3, axis=0)
        acc_wc1 += mm(tl.trans(gz3), m, DOT)
        gmt = gm + mm(gz3, wc1, DOT)
        # m = m0 * sigmoid(m0 . w_att + b_att)
        if HAS_ATT:
            gl = tl.sum(gmt * m0, axis=1) * s * (1.0 - s)
            acc_watt += tl.sum(gl[:, None] * m0, axis=0)
            acc_batt += gl
            gm0 = gmt * s[:, None] + gl[:, None] * watt[None, :]
        else:
            gm0 = gmt
        # m0 = act(z2), z2 = act(z1) @ w2^T + b2
        gz2 = gm0 * _dact(z2, ACT)
        acc_b2 += tl.sum(gz2, axis=0)
        acc_w2 += mm(tl.trans(gz2), a1, DOT)
        dz1 = mm(gz2, w2, DOT) * _dact(z1, ACT)
        dz1 = tl.where(hmask, dz1, 0.0)
        # z1 = node_i[dst] + node_j[src] + r w_radial + edge_attr @ w_edge^T, r = |d|^2
        acc_wrad += tl.sum(dz1 * r[:, None], axis=0)
        gr2 = 2.0 * tl.sum(dz1 * wrad[None, :], axis=1)
        # A self-loop's d = coord[i] - coord[i] is identically 0: no coord gradient (its
        # +dd / -dd would cancel, from terms as large as |g| / 1e-8 in the normalised modes).
        ring = srci == dsti
        gd0 = tl.where(ring, 0.0, gd0 + gr2 * d0)
        gd1 = tl.where(ring, 0.0, gd1 + gr2 * d1)
        gd2 = tl.where(ring, 0.0, gd2 + gr2 * d2)
        if D > 0:
            emask = rmask[:, None] & (cd < D)[None, :]
            ea = tl.load(ea_ptr + rows[:, None] * D + cd[None, :], mask=emask, other=0.0)
            acc_wedge += mm(tl.trans(dz1), ea, DOT)
            tl.store(gea_ptr + rows[:, None] * D + cd[None, :], mm(dz1, wedge, DOT), mask=emask)
        if STORE_BUF:
            tl.store(buf_ptr + rows[:, None] * (H1 + 3) + ch[None, :], dz1, mask=hmask)
            tl.store(buf_ptr + rows * (H1 + 3) + H1, gd0, mask=rmask)
            tl.store(buf_ptr + rows * (H1 + 3) + H1 + 1, gd1, mask=rmask)
            tl.store(buf_ptr + rows * (H1 + 3) + H1 + 2, gd2, mask=rmask)
        if ATOMIC_DST:
            tl.atomic_add(gni_ptr + dsti[:, None] * H1 + ch[None, :], dz1, mask=hmask, sem="relaxed")
            tl.atomic_add(gx_ptr + dsti * 3, gd0, mask=rmask, sem="relaxed")
            tl.atomic_add(gx_ptr + dsti * 3 + 1, gd1, mask=rmask, sem="relaxed")
            tl.atomic_add(gx_ptr + dsti * 3 + 2, gd2, mask=rmask, sem="relaxed")
        if ATOMIC_SRC:
            tl.atomic_add(gnj_ptr + srci[:, None] * H1 + ch[None, :], dz1, mask=hmask, sem="relaxed")
            tl.atomic_add(gx_ptr + srci * 3, -gd0, mask=rmask, sem="relaxed")
            tl.atomic_add(gx_ptr + srci * 3 + 1, -gd1, mask=rmask, sem="relaxed")
            tl.atomic_add(gx_ptr + srci * 3 + 2, -gd2, mask=rmask, sem="relaxed")
    # One row of partial sums per program.
    tl.store(pwrad + pid * H1 + ch, acc_wrad, mask=ch < H1)
    if D > 0:
        tl.store(pwedge + pid * (H1 * D) + ch[:, None] * D + cd[None, :], acc_wedge,
                 mask=(ch < H1)[:, None] & (cd < D)[None, :])
    tl.store(pw2 + pid * (M * H1) + cm[:, None] * H1 + ch[None, :], acc_w2, mask=(cm < M)[:, None] & (ch < H1)[None, :])
    tl.store(pb2 + pid * M + cm, acc_b2, mask=cm < M)
    if HAS_ATT:
        tl.store(pwatt + pid * M + cm, acc_watt, mask=cm < M)
        tl.store(pbatt + pid, tl.sum(acc_batt, axis=0))
    tl.store(pwc1 + pid * (HC * M) + chc[:, None] * M + cm[None, :], acc_wc1, mask=(chc < HC)[:, None] & (cm < M)[None, :])
    tl.store(pbc1 + pid * HC + chc, acc_bc1, mask=chc < HC)
    tl.store(pwc2 + pid * HC + chc, acc_wc2, mask=chc < HC)
    if HAS_BC2:
        tl.store(pbc2 + pid, tl.sum(acc_bc2, axis=0))


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------


def _width(n: int) -> int:
    """A block width for ``n`` columns: a power of two, at least 16 (``tl.dot``)."""
    return max(16, 1 << max(0, (n - 1).bit_length()))


def _config(kind: str, widths, block: Optional[int], name: str) -> Tuple[int, int]:
    """``(rows per program, warps)``. Chosen from ptxas resource reports for sm_90 (no
    run on a GPU): 8 warps keep the ``[rows, width]`` tiles of widths >= 64 in registers
    (4 warps spilled heavily in the backward); the backward and wide atomic forwards
    take 16 edges per block, the CSR forward 16 receivers."""
    widest = max(_width(w) for w in widths)
    if block is None:
        block = BLOCK_NODES if kind == "csr" else 32 if (kind == "atomic" and widest <= 64) else 16
    block = int(block)
    if block < 16 or block & (block - 1):
        raise ValueError(f"{name} must be a power of two >= 16, got {block}")
    return block, 8 if widest >= 64 else 4


def _device_ctx(t: Tensor):
    from contextlib import nullcontext

    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


def _ptr(t: Optional[Tensor], fallback: Tensor) -> Tensor:
    """A tensor to pass for a pointer argument (absent or empty ones get a valid dummy)."""
    return t if t is not None and t.numel() > 0 else fallback


def _contig(t: Optional[Tensor]) -> Optional[Tensor]:
    return t.contiguous() if t is not None else None


def _prepare(node_i, node_j, coord, edge_attr, src, dst, weights, act, coord_norm):
    """Checks what the kernels rely on; returns contiguous tensors and the sizes."""
    if node_i.dtype not in _DTYPES:
        raise TypeError(f"node_i must be float32 or float64, got {node_i.dtype}")
    if act not in _ACT:
        raise ValueError(f"act must be one of {tuple(_ACT)} for the Triton kernels, got {act!r}")
    if coord_norm not in _NORM:
        raise ValueError(f"coord_norm must be one of {tuple(_NORM)}, got {coord_norm!r}")
    w_radial, w_edge, w2, b2, w_att, b_att, wc1, bc1, wc2, bc2 = weights
    if (w_att is None) != (b_att is None):
        raise ValueError("w_att and b_att must be given together or both be None")
    n, H1 = node_i.shape
    M, Hc = w2.shape[0], wc1.shape[0]
    E, D = edge_attr.shape
    for name, t in (("node_i", node_i), ("node_j", node_j), ("coord", coord), ("edge_attr", edge_attr),
                    ("w_radial", w_radial), ("w_edge", w_edge), ("w2", w2), ("b2", b2), ("w_att", w_att),
                    ("b_att", b_att), ("wc1", wc1), ("bc1", bc1), ("wc2", wc2), ("bc2", bc2)):
        if t is not None and (t.dtype != node_i.dtype or t.device != node_i.device):
            raise TypeError(f"{name} must have node_i's dtype and device, got {t.dtype} on {t.device}")
    for name, t in (("src", src), ("dst", dst)):
        if t.dtype != torch.int64 or t.dim() != 1 or t.numel() != E or t.device != node_i.device:
            raise ValueError(f"{name} must be an int64 ({E},) tensor on {node_i.device}, got {t.dtype} {tuple(t.shape)}")
    tensors = [_contig(t) for t in (node_i, node_j, coord, edge_attr, src, dst) + tuple(weights)]
    return tensors, (n, E, H1, M, Hc, D)


def _view(perm: Optional[Tensor], indptr: Optional[Tensor], n: int, E: int, name: str, device):
    if indptr is None:
        if perm is not None:
            raise ValueError(f"{name}_perm is given without {name}_indptr")
        return None, None
    if indptr.dtype != torch.int64 or indptr.dim() != 1 or indptr.numel() != n + 1 or indptr.device != device:
        raise ValueError(f"{name}_indptr must be an int64 ({n + 1},) tensor on {device}, got {indptr.dtype} {tuple(indptr.shape)}")
    if perm is not None and (perm.dtype != torch.int64 or perm.dim() != 1 or perm.numel() != E or perm.device != device):
        raise ValueError(f"{name}_perm must be an int64 ({E},) tensor on {device}, got {perm.dtype} {tuple(perm.shape)}")
    return _contig(perm), indptr.contiguous()


def _constexprs(H1, M, Hc, D, dtype, act, coord_norm, w_att, bc2, tanh, c_clamp, trans_clamp):
    return dict(
        H1=H1, M=M, HC=Hc, D=D, BH1=_width(H1), BM=_width(M), BHC=_width(Hc), BD=_width(D),
        ACT=_ACT[act], NORM=_NORM[coord_norm], HAS_ATT=w_att is not None, HAS_BC2=bc2 is not None,
        TANH=bool(tanh), CCLAMP=float(c_clamp) > 0, TCLAMP=float(trans_clamp) > 0,
        DOT=dtype != torch.float64 or bool(FP64_DOT),
    )


def message_forward(
    node_i: Tensor, node_j: Tensor, coord: Tensor, edge_attr: Tensor, src: Tensor, dst: Tensor,
    dst_perm: Optional[Tensor], dst_indptr: Optional[Tensor],
    w_radial: Tensor, w_edge: Tensor, w2: Tensor, b2: Tensor, w_att: Optional[Tensor], b_att: Optional[Tensor],
    wc1: Tensor, bc1: Tensor, wc2: Tensor, bc2: Optional[Tensor],
    act: str = "silu", coord_norm: str = "none", tanh: bool = False, c_clamp: float = 0.0, trans_clamp: float = 0.0,
    *, block_nodes: Optional[int] = None, block_edges: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """``(m_sum (n, M), t_sum (n, 3))``. ``dst_perm`` / ``dst_indptr``: the receiver-sorted
    view (deterministic); ``dst_indptr`` None: atomic adds. ``block_nodes`` (CSR) /
    ``block_edges`` (atomic): rows per program, powers of two >= 16."""
    weights = (w_radial, w_edge, w2, b2, w_att, b_att, wc1, bc1, wc2, bc2)
    tensors, (n, E, H1, M, Hc, D) = _prepare(node_i, node_j, coord, edge_attr, src, dst, weights, act, coord_norm)
    node_i, node_j, coord, edge_attr, src, dst, w_radial, w_edge, w2, b2, w_att, b_att, wc1, bc1, wc2, bc2 = tensors
    perm, indptr = _view(dst_perm, dst_indptr, n, E, "dst", node_i.device)
    csr = indptr is not None
    dtype, dev = node_i.dtype, node_i.device
    if E == 0 or n == 0:
        return torch.zeros(n, M, dtype=dtype, device=dev), torch.zeros(n, 3, dtype=dtype, device=dev)
    if csr:
        br, warps = _config("csr", (H1, M, Hc, D), block_nodes, "block_nodes")
    else:
        br, warps = _config("atomic", (H1, M, Hc, D), block_edges, "block_edges")
    alloc = torch.empty if csr else torch.zeros
    m_sum = alloc(n, M, dtype=dtype, device=dev)
    t_sum = alloc(n, 3, dtype=dtype, device=dev)
    grid = (triton.cdiv(n, br) if csr else triton.cdiv(E, br),)
    with _device_ctx(node_i):
        _forward_kernel[grid](
            node_i, node_j, coord, _ptr(edge_attr, node_i), src, dst, _ptr(perm, src), _ptr(indptr, src),
            w_radial, _ptr(w_edge, w_radial), w2, b2, _ptr(w_att, b2), _ptr(b_att, b2), wc1, bc1, wc2, _ptr(bc2, b2),
            m_sum, t_sum, E, n, float(c_clamp), float(trans_clamp),
            BR=br, CSR=csr, HAS_PERM=perm is not None, num_warps=warps,
            **_constexprs(H1, M, Hc, D, dtype, act, coord_norm, w_att, bc2, tanh, c_clamp, trans_clamp),
        )  # fmt: skip
    return m_sum, t_sum


def message_backward(
    grad_m: Tensor, grad_t: Tensor, node_i: Tensor, node_j: Tensor, coord: Tensor, edge_attr: Tensor,
    src: Tensor, dst: Tensor, dst_perm: Optional[Tensor], dst_indptr: Optional[Tensor],
    src_perm: Optional[Tensor], src_indptr: Optional[Tensor],
    w_radial: Tensor, w_edge: Tensor, w2: Tensor, b2: Tensor, w_att: Optional[Tensor], b_att: Optional[Tensor],
    wc1: Tensor, bc1: Tensor, wc2: Tensor, bc2: Optional[Tensor],
    act: str = "silu", coord_norm: str = "none", tanh: bool = False, c_clamp: float = 0.0, trans_clamp: float = 0.0,
    *, block_edges: Optional[int] = None,
) -> Tuple[Optional[Tensor], ...]:
    """The gradients of ``sum(grad_m * m_sum) + sum(grad_t * t_sum)`` w.r.t. ``node_i,
    node_j, coord, edge_attr, w_radial, w_edge, w2, b2, w_att, b_att, wc1, bc1, wc2,
    bc2`` (None for an absent weight). Node gradients: deterministic through the views
    (``dst_*`` for ``node_i`` and the receiver side of ``coord``, ``src_*`` for
    ``node_j`` and the sender side), atomic adds where a view is None. Edge and weight
    gradients are deterministic either way."""
    weights = (w_radial, w_edge, w2, b2, w_att, b_att, wc1, bc1, wc2, bc2)
    tensors, (n, E, H1, M, Hc, D) = _prepare(node_i, node_j, coord, edge_attr, src, dst, weights, act, coord_norm)
    node_i, node_j, coord, edge_attr, src, dst, w_radial, w_edge, w2, b2, w_att, b_att, wc1, bc1, wc2, bc2 = tensors
    dev, dtype = node_i.device, node_i.dtype
    dperm, dindptr = _view(dst_perm, dst_indptr, n, E, "dst", dev)
    sperm, sindptr = _view(src_perm, src_indptr, n, E, "src", dev)
    for name, g, shape in (("grad_m", grad_m, (n, M)), ("grad_t", grad_t, (n, 3))):
        if tuple(g.shape) != shape or g.dtype != dtype or g.device != dev:
            raise ValueError(f"{name} must be a {shape} {dtype} tensor on {dev}, got {g.dtype} {tuple(g.shape)} on {g.device}")
    grad_m, grad_t = grad_m.contiguous(), grad_t.contiguous()

    def zeros(t):
        return torch.zeros_like(t) if t is not None else None

    if E == 0 or n == 0:
        return tuple(zeros(t) for t in (node_i, node_j, coord, edge_attr) + tuple(tensors[6:]))

    be, warps = _config("backward", (H1, M, Hc, D), block_edges, "block_edges")
    NB = triton.cdiv(E, be)
    P = max(1, min(NB, int(REDUCE_PROGRAMS)))
    atomic_dst, atomic_src = dindptr is None, sindptr is None
    store_buf = not (atomic_dst and atomic_src)
    buf = torch.empty(E, H1 + 3, dtype=dtype, device=dev) if store_buf else None
    gni = torch.zeros(n, H1, dtype=dtype, device=dev) if atomic_dst else None
    gnj = torch.zeros(n, H1, dtype=dtype, device=dev) if atomic_src else None
    gx = torch.zeros(n, 3, dtype=dtype, device=dev)
    gea = torch.empty(E, D, dtype=dtype, device=dev)

    def part(size, present=True):
        return torch.empty(P, size, dtype=dtype, device=dev) if present else None

    parts = [part(H1), part(H1 * D, D > 0), part(M * H1), part(M), part(M, w_att is not None),
             part(1, w_att is not None), part(Hc * M), part(Hc), part(Hc), part(1, bc2 is not None)]
    with _device_ctx(node_i):
        _backward_kernel[(P,)](
            grad_m, grad_t, node_i, node_j, coord, _ptr(edge_attr, node_i), src, dst,
            w_radial, _ptr(w_edge, w_radial), w2, b2, _ptr(w_att, b2), _ptr(b_att, b2), wc1, bc1, wc2, _ptr(bc2, b2),
            _ptr(buf, gx), _ptr(gni, gx), _ptr(gnj, gx), gx, _ptr(gea, gx),
            *[_ptr(p, gx) for p in parts],
            E, NB, P, float(c_clamp), float(trans_clamp),
            BR=be, ATOMIC_DST=atomic_dst, ATOMIC_SRC=atomic_src, STORE_BUF=store_buf, num_warps=warps,
            **_constexprs(H1, M, Hc, D, dtype, act, coord_norm, w_att, bc2, tanh, c_clamp, trans_clamp),
        )  # fmt: skip
    if store_buf:
        from equiops.kernels.segment import segment_sum

        rows = buf.view(1, E, H1 + 3)
        if not atomic_dst:
            s = segment_sum(rows, dindptr.view(1, n + 1), dperm)[0]
            gni = s[:, :H1].contiguous()
            gx = gx + s[:, H1:]
        if not atomic_src:
            s = segment_sum(rows, sindptr.view(1, n + 1), sperm)[0]
            gnj = s[:, :H1].contiguous()
            gx = gx - s[:, H1:]

    def total(p, shape):
        return p.sum(0).view(shape) if p is not None else None

    g_wedge = total(parts[1], w_edge.shape) if D > 0 else torch.zeros_like(w_edge)
    return (
        gni, gnj, gx, gea,
        total(parts[0], w_radial.shape), g_wedge, total(parts[2], w2.shape), total(parts[3], b2.shape),
        total(parts[4], w_att.shape) if w_att is not None else None,
        total(parts[5], b_att.shape) if b_att is not None else None,
        total(parts[6], wc1.shape), total(parts[7], bc1.shape), total(parts[8], wc2.shape),
        total(parts[9], bc2.shape) if bc2 is not None else None,
    )
