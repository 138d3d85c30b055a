r"""Triton kernels for the fused tensor-product convolution, generated per problem.

Semantics: :mod:`equiops.reference.tp_conv`. For edges ``src[e] -> dst[e]``, sender
features ``x (Ns, dim1)``, edge attributes ``edge_attr (E2, dim2)`` and edge weights
``weight (Ew, dim_w)`` (``E2``, ``Ew`` each ``E`` or ``1``: one row for every edge)::

    out = zeros(num_nodes, dim_out).index_add_(0, dst, tensor_product(x[src], edge_attr, weight))

computed without materialising the ``(E, dim_out)`` messages: the kernels gather the
sender rows, evaluate the product in registers and reduce into the receivers. Launchers:

* :func:`conv_forward` ``(x, edge_attr, weight, src, dst, perm, indptr, num_nodes,
  problem)``: ``perm`` / ``indptr`` the receiver-sorted CSR (``perm=None``: the edges
  are already sorted by ``dst``); both None: the atomic variant.
* :func:`conv_backward` ``(grad_out, x, edge_attr, weight, src, dst, perm, indptr, need,
  problem)``: ``perm`` / ``indptr`` the *sender*-sorted CSR (same conventions); returns
  ``(grad_x, grad_edge_attr, grad_weight)``, ``x.new_empty(0)`` where ``need`` is false.

Kernel design. The per-path code comes from :mod:`equiops.kernels.tensor_product`'s
generator (``_Gen._path_into``: CG nonzeros unrolled with their coefficients as
literals, channels across lanes, the mode's lane/loop layout); only where the rows come
from differs. A *row* here is an edge, and the four row offsets the path code reads are
``r1 = src[e] * dim1`` (the gathered sender row), ``r2 = e * s2``, ``rw = e * sw``
(stride 0 for a broadcast row) and ``ro = dst[e] * dim_out`` (the gathered ``grad_out``
row, backward only). Groups (one output block each, every path writing it summed in
registers, so an element has one writer per program) are those of the plain product.

* Deterministic forward (CSR given): grid ``(cdiv(num_nodes, BN), output groups)``. A
  program owns ``BN`` receivers; it loads their ``indptr`` ranges, loops ``step`` over
  the block's largest in-degree, and at each step every receiver with ``step < degree`` adds
  the product of its ``step``-th incoming edge (``perm[indptr[n] + step]``) to its ``[BN,
  lanes]`` accumulators; one store per output row at the end (isolated receivers store
  zeros). Each receiver's sum runs in CSR order in one program: bitwise reproducible
  run to run, and the order of additions depends on neither ``BN`` nor the grid.
* Atomic forward (no CSR): grid ``(cdiv(E, BN), output groups)`` over edge blocks; each
  program computes its edges' messages for the group and ``tl.atomic_add``\ s them into
  ``out[dst]`` (zero-initialised; float32 buffer for half inputs). Not deterministic.
* Backward, one kernel: ``grad_x`` groups (one per ``x`` block) are the transpose of
  the forward: with the sender CSR, a program owns ``BN`` senders and loops over their
  outgoing edges, gathering ``grad_out[dst[e]]`` (deterministic, CSR order); without it,
  edge blocks ``atomic_add`` into ``grad_x[src]``. ``grad_edge_attr`` groups (one per
  ``x2`` block) and ``grad_weight`` groups (one per weighted path) are per edge, exactly
  the plain product's backward groups (``_Gen.in_group`` / ``_Gen.w_group``) with the
  gathered row offsets; the gradient of a broadcast ``edge_attr`` / ``weight`` (one row,
  ``E > 1``) is summed by the first ``P = min(edge blocks, REDUCE_PROGRAMS)`` programs
  into a ``(P, D)`` buffer then ``torch.sum``: fixed order, deterministic. The grid is
  ``(max(node blocks, edge blocks), groups)``; each group's programs beyond its own
  count return at once.

Row offsets are int64 (edge ids, node ids and ``indptr`` are int64 tensors), so ``rows x
width`` may exceed ``2**31``. Dtypes as the plain product: float32 / float64 compute in
their own type, float16 / bfloat16 accumulate in float32.

Generated modules are cached like the plain product's (:mod:`equiops.kernels._codecache`,
namespace ``triton_tp_conv``, keyed by problem, kind, device name, equiops version and
:data:`GENERATOR_VERSION`). The launchers check shapes, dtypes and devices, not index
values (the op layer / :class:`equiops.Graph` does).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from equiops.kernels import _codecache
from equiops.kernels.tensor_product import (
    _ACC,
    _Grad,
    _Gen,
    _Term,
    _acc_dtype,
    _check_operands,
    _covered,
    _device_ctx,
    _device_name,
    _groups,
    _launch_params,
    _pow2,
    _prologue,
    _ptr,
)
from equiops.tp_problem import TPPath, TPProblem, decode

__all__ = ["conv_forward", "conv_backward", "generate", "GENERATOR_VERSION"]

# Bump when the generated source changes (part of the disk-cache key).
GENERATOR_VERSION = 1
# Programs that share the edge-sum of a broadcast input's gradient.
REDUCE_PROGRAMS = 256
_NAMESPACE = "triton_tp_conv"


# --------------------------------------------------------------------------------------
# Helpers called by the generated kernels
# --------------------------------------------------------------------------------------


@triton.jit
def _att(ptr, roff, col, val, mask):
    """Atomic add of tile ``val [BN, Lp]`` at rows ``roff`` [BN], columns ``col`` [Lp]."""
    tl.atomic_add(ptr + (roff[:, None] + col[None, :]), val.to(ptr.dtype.element_ty), mask=mask, sem="relaxed")


# --------------------------------------------------------------------------------------
# Code generation
# --------------------------------------------------------------------------------------


class _ConvGen(_Gen):
    """The plain product's generator with edge rows: ``_rows`` gathers through src/dst."""

    def _rows(self, ind: int, rb: str) -> None:
        prob = self.prob
        self.emit(ind, f"rows = ({rb} + tl.zeros([BN], tl.int64)) * BN + tl.arange(0, BN)")
        self.emit(ind, "rmask = rows < N")
        self.emit(ind, "m2d = rmask[:, None] & lmask[None, :]")
        self.emit(ind, "sidx = tl.load(src_ptr + rows, mask=rmask, other=0)")
        self.emit(ind, "didx = tl.load(dst_ptr + rows, mask=rmask, other=0)")
        self.emit(ind, f"r1 = sidx * {prob.dim1}")
        self.emit(ind, "r2 = rows * s2")
        self.emit(ind, "rw = rows * sw")
        self.emit(ind, f"ro = didx * {prob.dim_out}")

    def _block(self, p0: TPPath, role: str) -> Tuple[int, int, int, int]:
        """``(multiplicity, components, first column, row width)`` of the group's block."""
        if role == "out":
            return p0.mo, p0.dk, p0.offo, self.prob.dim_out
        return p0.m1, p0.d1, p0.off1, self.prob.dim1

    def node_group(self, ind: int, gid: int, role: str, paths: Sequence[TPPath], out_ptr: str) -> None:
        """One block of ``out`` (role ``out``, receivers, gathering ``x[src]``) or of
        ``grad_x`` (role ``g1``, senders, gathering ``grad_out[dst]``) through the CSR:
        ``BN`` nodes per program, a loop over their edges in CSR order, one store."""
        p0 = paths[0]
        m, d, off, width = self._block(p0, role)
        other, roff, owidth = ("src_ptr", "r1", self.prob.dim1) if role == "out" else ("dst_ptr", "ro", self.prob.dim_out)
        Lp = _pow2(m)
        self.emit(ind, f"if (gid == {gid}) & (pid < NBN):")
        ind += 1
        self._lanes(ind, m)
        self.emit(ind, "nodes = (pid + tl.zeros([BN], tl.int64)) * BN + tl.arange(0, BN)")
        self.emit(ind, "nmask = nodes < M")
        self.emit(ind, "beg = tl.load(indptr_ptr + nodes, mask=nmask, other=0)")
        self.emit(ind, "deg = tl.load(indptr_ptr + nodes + 1, mask=nmask, other=0) - beg")
        accs = {k: f"acc{k}" for k in range(d)}
        for a in accs.values():
            self.emit(ind, f"{a} = tl.zeros([BN, {Lp}], ACC)")
        self.emit(ind, "for step in range(0, tl.max(deg, axis=0)):")
        ind += 1
        self.emit(ind, "rmask = step < deg")
        self.emit(ind, "m2d = rmask[:, None] & lmask[None, :]")
        self.emit(ind, "pos = beg + step")
        self.emit(ind, "if HAS_PERM:")
        self.emit(ind + 1, "eid = tl.load(perm_ptr + pos, mask=rmask, other=0)")
        self.emit(ind, "else:")
        self.emit(ind + 1, "eid = pos")
        self.emit(ind, f"{roff} = tl.load({other} + eid, mask=rmask, other=0) * {owidth}")
        self.emit(ind, "r2 = eid * s2")
        self.emit(ind, "rw = eid * sw")
        for p in paths:
            self._path_into(ind, p, role, _Term(), accs)
        ind -= 1
        self.emit(ind, f"cst = {off} + ln * {d}")
        self.emit(ind, "smask = nmask[:, None] & lmask[None, :]")
        for k, a in accs.items():
            self.emit(ind, f"_stt({out_ptr}, nodes * {width}, cst{f' + {k}' if k else ''}, {a}, smask)")

    def edge_group(self, ind: int, gid: int, role: str, paths: Sequence[TPPath], out_ptr: str) -> None:
        """The same block without a CSR: ``BN`` edges per program, their messages added
        atomically at ``dst`` (role ``out``) or ``src`` (role ``g1``)."""
        p0 = paths[0]
        m, d, off, width = self._block(p0, role)
        Lp = _pow2(m)
        self.emit(ind, f"if (gid == {gid}) & (pid < NB):")
        ind += 1
        self._lanes(ind, m)
        self._rows(ind, "pid")
        accs = {k: f"acc{k}" for k in range(d)}
        for a in accs.values():
            self.emit(ind, f"{a} = tl.zeros([BN, {Lp}], ACC)")
        for p in paths:
            self._path_into(ind, p, role, _Term(), accs)
        self.emit(ind, f"cst = {off} + ln * {d}")
        target = "didx" if role == "out" else "sidx"
        for k, a in accs.items():
            self.emit(ind, f"_att({out_ptr}, {target} * {width}, cst{f' + {k}' if k else ''}, {a}, m2d)")


_SIGNATURES = {
    "forward": (
        "x1_ptr, x2_ptr, w_ptr, src_ptr, dst_ptr, perm_ptr, indptr_ptr, out_ptr, N, M, s2, sw, NB, NBN, "
        "CSR: tl.constexpr, HAS_PERM: tl.constexpr, ACC: tl.constexpr, BN: tl.constexpr"
    ),
    "backward": (
        "go_ptr, x1_ptr, x2_ptr, w_ptr, src_ptr, dst_ptr, perm_ptr, indptr_ptr, g1_ptr, g2_ptr, gw_ptr, "
        "N, M, s2, sw, NB, NBN, P2, PW, CSR: tl.constexpr, HAS_PERM: tl.constexpr, "
        "NEED1: tl.constexpr, NEED2: tl.constexpr, NEEDW: tl.constexpr, "
        "RED2: tl.constexpr, REDW: tl.constexpr, ACC: tl.constexpr, BN: tl.constexpr"
    ),
}


def generate(problem: str, kind: str) -> str:
    """The Python source of the ``kind`` kernel (``forward`` or ``backward``) of
    ``problem``; its kernel is named ``kernel``. ``N``: edges, ``M``: nodes of the CSR
    (receivers forward, senders backward), ``NB`` / ``NBN``: edge / node blocks."""
    prob = decode(problem)
    grp = _groups(prob)
    g = _ConvGen(prob)
    _prologue(g, f"Generated by {__name__} (version {GENERATOR_VERSION}): {kind} tensor-product convolution kernel.",
              ["from equiops.kernels.tensor_product import _ldr, _ldt, _st1, _stt", f"from {__name__} import _att"],
              _SIGNATURES[kind])
    gid = 0
    if kind == "forward":
        for paths in grp.out:
            g.emit(1, "if CSR:")
            g.node_group(2, gid, "out", paths, "out_ptr")
            g.emit(1, "else:")
            g.edge_group(2, gid, "out", paths, "out_ptr")
            gid += 1
    elif kind == "backward":
        for paths in grp.in1:
            g.emit(1, "if NEED1:")
            g.emit(2, "if CSR:")
            g.node_group(3, gid, "g1", paths, "g1_ptr")
            g.emit(2, "else:")
            g.edge_group(3, gid, "g1", paths, "g1_ptr")
            gid += 1
        for paths in grp.in2:
            g.emit(1, "if NEED2:")
            g.in_group(2, gid, "g2", paths, lambda p: [_Term()], "g2_ptr")
            gid += 1
        for p in grp.w:
            g.emit(1, "if NEEDW:")
            g.w_group(2, gid, p, [_Term()], "gw_ptr")
            gid += 1
    else:
        raise ValueError(f"unknown kernel kind {kind!r}")
    return "\n".join(g.lines) + "\n"


def _kernel(problem: str, kind: str, device: torch.device):
    import equiops

    parts = (problem, kind, _device_name(device), equiops.__version__, str(GENERATOR_VERSION))
    return _codecache.load(_NAMESPACE, parts, lambda: generate(problem, kind)).kernel


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------


def _check_index(t: Tensor, name: str, n: int, device: torch.device) -> None:
    if t.dtype != torch.int64 or t.dim() != 1 or t.shape[0] != n or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous int64 ({n},) tensor, got {t.dtype} {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} must be on {device} like x, got {t.device}")


def _check(x, edge_attr, weight, src, dst, perm, indptr, num_csr_nodes: int, prob: TPProblem) -> Tuple[int, bool]:
    """Checks the arguments; returns ``(E, csr)``."""
    if x.dtype not in _ACC:
        raise TypeError(f"unsupported dtype {x.dtype}")
    if src.dim() != 1:
        raise ValueError(f"src must be 1-D (E,), got {tuple(src.shape)}")
    E = src.shape[0]
    _check_operands(((x, prob.dim1, "x"), (edge_attr, prob.dim2, "edge_attr"), (weight, prob.dim_w, "weight")), x, "x")
    for t, name in ((edge_attr, "edge_attr"), (weight, "weight")):
        if t.shape[0] not in (1, E):
            raise ValueError(f"{name} has {t.shape[0]} rows; it must have 1 or E = {E}")
    _check_index(src, "src", E, x.device)
    _check_index(dst, "dst", E, x.device)
    if indptr is None:
        if perm is not None:
            raise ValueError("perm is given without indptr")
        return E, False
    _check_index(indptr, "indptr", num_csr_nodes + 1, x.device)
    if perm is not None:
        _check_index(perm, "perm", E, x.device)
    return E, True


def _stride(t: Tensor) -> int:
    return 0 if t.shape[0] == 1 else t.shape[1]


def conv_forward(
    x: Tensor,
    edge_attr: Tensor,
    weight: Tensor,
    src: Tensor,
    dst: Tensor,
    perm: Optional[Tensor],
    indptr: Optional[Tensor],
    num_nodes: int,
    problem: str,
    *,
    block_rows: Optional[int] = None,
) -> Tensor:
    """``out (num_nodes, dim_out)``: the sum over each receiver's edges of the edge's
    tensor product. ``perm`` / ``indptr``: the receiver-sorted CSR (``perm=None``: edges
    already sorted by ``dst``), deterministic; both None: atomic adds. ``block_rows``:
    nodes (CSR) or edges (atomic) per program, a power of two."""
    prob = decode(problem)
    num_nodes = int(num_nodes)
    E, csr = _check(x, edge_attr, weight, src, dst, perm, indptr, num_nodes, prob)
    grp = _groups(prob)
    dtype = x.dtype
    if E == 0 or num_nodes == 0 or not grp.out:
        return torch.zeros(num_nodes, prob.dim_out, dtype=dtype, device=x.device)
    bn, warps = _launch_params(prob, block_rows)
    NB, NBN = triton.cdiv(E, bn), triton.cdiv(num_nodes, bn)
    if csr:
        out = (torch.empty if _covered(prob, "out") else torch.zeros)(num_nodes, prob.dim_out, dtype=dtype, device=x.device)
    else:
        out = torch.zeros(num_nodes, prob.dim_out, dtype=_acc_dtype(dtype), device=x.device)
    kernel = _kernel(problem, "forward", x.device)
    with _device_ctx(x):
        kernel[(NBN if csr else NB, len(grp.out))](
            x, edge_attr, _ptr(weight, x), src, dst, _ptr(perm, src), _ptr(indptr, src), out,
            E, num_nodes, _stride(edge_attr), _stride(weight), NB, NBN,
            CSR=csr, HAS_PERM=perm is not None, ACC=_ACC[dtype], BN=bn, num_warps=warps,
        )  # fmt: skip
    return out if out.dtype == dtype else out.to(dtype)


def conv_backward(
    grad_out: Tensor,
    x: Tensor,
    edge_attr: Tensor,
    weight: Tensor,
    src: Tensor,
    dst: Tensor,
    perm: Optional[Tensor],
    indptr: Optional[Tensor],
    need: Sequence[bool],
    problem: str,
    *,
    block_rows: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(grad_x, grad_edge_attr, grad_weight)`` of ``sum(grad_out * conv_forward(...))``,
    shaped like their inputs (a broadcast edge input gets the sum over edges);
    ``x.new_empty(0)`` where ``need`` is false. ``perm`` / ``indptr``: the sender-sorted
    CSR (``perm=None``: edges already sorted by ``src``), deterministic ``grad_x``; both
    None: ``grad_x`` by atomic adds. The edge gradients are always deterministic."""
    prob = decode(problem)
    Ns = x.shape[0]
    E, csr = _check(x, edge_attr, weight, src, dst, perm, indptr, Ns, prob)
    if grad_out.dim() != 2 or grad_out.shape[1] != prob.dim_out or not grad_out.is_contiguous():
        raise ValueError(f"grad_out must be contiguous (num_nodes, {prob.dim_out}), got {tuple(grad_out.shape)}")
    if grad_out.dtype != x.dtype or grad_out.device != x.device:
        raise TypeError(f"grad_out must have the dtype and device of x, got {grad_out.dtype} on {grad_out.device}")
    need = tuple(bool(n) for n in need)
    if len(need) != 3:
        raise ValueError(f"need must have three entries, got {len(need)}")
    grp = _groups(prob)
    dtype = x.dtype
    bn, warps = _launch_params(prob, block_rows)
    NB, NBN = max(triton.cdiv(E, bn), 1), max(triton.cdiv(Ns, bn), 1)

    g1 = None
    if need[0]:
        if csr and E > 0:
            g1 = (torch.empty if _covered(prob, "g1") else torch.zeros)(Ns, prob.dim1, dtype=dtype, device=x.device)
        else:
            g1 = torch.zeros(Ns, prob.dim1, dtype=dtype if csr else _acc_dtype(dtype), device=x.device)
    # Edge inputs' gradients: one row per edge, or (a broadcast row, E > 1) partial rows of
    # the first P programs summed in a fixed order (the plain product's _Grad; E == 0
    # launches nothing, so its rows start at zero).
    g2 = _Grad(edge_attr, E, NB, prob.dim2, _covered(prob, "g2") and E > 0, REDUCE_PROGRAMS) if need[1] else None
    gw = _Grad(weight, E, NB, prob.dim_w, _covered(prob, "gw") and E > 0, REDUCE_PROGRAMS) if need[2] else None

    run1 = g1 is not None and g1.numel() > 0 and bool(grp.in1)
    run2 = g2 is not None and g2.buf.numel() > 0 and bool(grp.in2)
    runw = gw is not None and gw.buf.numel() > 0 and bool(grp.w)
    if E > 0 and (run1 or run2 or runw):
        ngroups = len(grp.in1) + len(grp.in2) + len(grp.w)
        rows = max(NBN if (run1 and csr) else 0, NB if (run2 or runw or (run1 and not csr)) else 0)
        kernel = _kernel(problem, "backward", x.device)
        with _device_ctx(x):
            kernel[(rows, ngroups)](
                grad_out, x, edge_attr, _ptr(weight, x), src, dst, _ptr(perm, src), _ptr(indptr, src),
                g1 if run1 else x, g2.buf if run2 else x, gw.buf if runw else x,
                E, Ns, _stride(edge_attr), _stride(weight), NB, NBN,
                g2.P if g2 is not None else NB, gw.P if gw is not None else NB,
                CSR=csr, HAS_PERM=perm is not None, NEED1=run1, NEED2=run2, NEEDW=runw,
                RED2=bool(g2 is not None and g2.reduce), REDW=bool(gw is not None and gw.reduce),
                ACC=_ACC[dtype], BN=bn, num_warps=warps,
            )  # fmt: skip
    empty = x.new_empty(0)
    return (
        (g1 if g1.dtype == dtype else g1.to(dtype)) if g1 is not None else empty,
        g2.result() if g2 is not None else empty,
        gw.result() if gw is not None else empty,
    )
