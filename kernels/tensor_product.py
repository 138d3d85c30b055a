r"""Triton kernels for the Clebsch-Gordan tensor product, generated per problem.

Semantics: :mod:`equiops.tp_problem` (paths, modes) and the plain-PyTorch reference
:mod:`equiops.reference.tensor_product`. Launchers:

* :func:`forward`: ``out (N, dim_out)`` from ``x1 (N1, dim1)``, ``x2 (N2, dim2)``,
  ``weight (Nw, dim_w)``, each row count ``1`` or ``N`` (broadcast);
* :func:`backward`: the gradients of ``sum(grad_out * out)`` w.r.t. the inputs asked for;
* :func:`double_backward`: the derivatives of the backward against incoming ``gg1``,
  ``gg2``, ``ggw`` (out is linear in each input separately, so this is a sum of forward-
  and backward-like contractions with one input replaced; all in one fused kernel).

Kernel design. One kernel per kind and problem, generated as straight-line Python source
with the Clebsch-Gordan nonzeros unrolled and their values (times the path coefficient)
baked in as float literals (``repr``: full double precision; Triton materialises a Python
float in the other operand's dtype, so float64 keeps every digit). The grid is
``(row blocks, groups)``: a *group* is one block of an output the kernel writes, and the
program of a group computes every path contributing to that block, so each output
element has exactly one writer (no atomics):

* forward: one group per output irrep block (the paths with that ``i_out``);
* backward: one group per ``x1`` block (the paths reading it), per ``x2`` block, and per
  weighted path (its weight slice);
* double backward: all four kinds of group.

Inside a group, a program holds ``BN`` rows and puts the block's *channels across lanes*:
accumulators are ``[BN, Lp]`` tiles, one per component, ``Lp`` the multiplicity rounded
up to a power of two (masked). Per path and mode, a small table (:func:`_spec`) says how
the channels ``u`` (of x1), ``v`` (x2), ``o`` (output) and the weight index depend on the
lane and on at most two runtime loops (e.g. ``uvw`` forward: lanes over ``w``, loops over
``u`` and ``v``; ``uvu`` forward: lanes over ``u``, a loop over ``v``). Operands whose
channel does not depend on the lane are loaded as per-row scalars ``[BN, 1]``; the
bilinear Clebsch-Gordan contraction first contracts the cheaper (per-row, outer-loop)
operand (e.g. ``A[i, k] = sum_j C_ijk x2[v, j]``, hoisted out of the inner loop), then the
other, and loads and partial contractions sit at the outermost loop level they depend on.

Row broadcasting: a broadcast input has row stride 0. The gradient of a broadcast input
(shared weights, ``N1 == 1``...) is a sum over rows: then only the first ``P`` programs
(``P = min(row blocks, REDUCE_PROGRAMS)``) of its groups run, each over row blocks
``pid, pid + P, ...``, accumulating in registers, and write one partial row of a
``(P, D)`` buffer that the launcher sums with ``torch.sum`` (a fixed order:
deterministic). For weight-gradient groups the row loop sits inside the channel loops
(each loop iteration owns a different weight slice); for input-gradient groups outside.

Dtypes: float32 and float64 compute in their own type; float16 / bfloat16 load into
float32, accumulate in float32 and store in the input dtype.

Generated modules are cached in memory and on disk (:mod:`equiops.kernels._codecache`,
namespace ``triton_tp``), keyed by (problem string, kind, device name, equiops version,
:data:`GENERATOR_VERSION`). The launchers run on the tensors' device: CUDA tensors, or
CPU tensors under ``TRITON_INTERPRET=1``. Inputs are checked by the op layer; the
launchers check shapes only.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from equiops.kernels import _codecache
from equiops.tp_problem import TPPath, TPProblem, decode

__all__ = ["forward", "backward", "double_backward", "GENERATOR_VERSION"]

# Bump when the generated source changes (part of the disk-cache key).
GENERATOR_VERSION = 1
# Programs that share a row-sum reduction (gradient of a broadcast input).
REDUCE_PROGRAMS = 256
_NAMESPACE = "triton_tp"


# --------------------------------------------------------------------------------------
# Helpers called by the generated kernels
# --------------------------------------------------------------------------------------


@triton.jit
def _ldt(ptr, roff, col, mask, ACC: tl.constexpr):
    """Tile ``[BN, Lp]``: rows at offsets ``roff`` [BN], columns ``col`` [Lp]."""
    return tl.load(ptr + (roff[:, None] + col[None, :]), mask=mask, other=0.0).to(ACC)


@triton.jit
def _ldr(ptr, roff, col, rmask, ACC: tl.constexpr):
    """Per-row scalar ``[BN, 1]``: one column ``col`` (a scalar) of rows ``roff``."""
    return tl.load(ptr + (roff + col), mask=rmask, other=0.0).to(ACC)[:, None]


@triton.jit
def _stt(ptr, roff, col, val, mask):
    tl.store(ptr + (roff[:, None] + col[None, :]), val.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _st1(ptr, col, val, mask):
    tl.store(ptr + col, val.to(ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------
# Per-mode index tables
# --------------------------------------------------------------------------------------


@dataclass
class _Spec:
    """How one path's channels map onto lanes ``ln`` and runtime loops ``ta``, ``tb``.

    ``u``, ``v``, ``o``, ``w``: expressions of the x1, x2, output channel and the weight
    index (within the path's slice); ``valid``: a lane mask expression or None;
    ``pre``: lane-only lines run once per group; ``loops``: ``(var, lo, hi)``."""

    ext: int
    loops: List[Tuple[str, str, str]]
    u: str
    v: str
    o: str
    w: str
    valid: Optional[str] = None
    pre: List[str] = field(default_factory=list)


def _q(m: int, u: str, v: str) -> str:
    """Index of the pair ``(u, v)``, ``u < v < m``, in ``triu_indices(m, m, 1)`` order."""
    return f"(({u}) * ({2 * m - 1} - ({u})) // 2 + ({v}) - ({u}) - 1)"


def _spec(p: TPPath, role: str, tag: str) -> _Spec:
    """The lane/loop layout of path ``p`` for a group of ``role``: ``out`` (lanes over the
    output channel; also used for the weight gradient), ``g1`` (lanes over ``u``) or
    ``g2`` (lanes over ``v``). ``tag`` makes the names of ``pre`` variables unique."""
    m1, m2, mo, mode = p.m1, p.m2, p.mo, p.mode
    if role == "out":
        if mode == "uvw":
            return _Spec(mo, [("ta", "0", f"{m1}"), ("tb", "0", f"{m2}")], "ta", "tb", "ln", f"(ta * {m2} + tb) * {mo} + ln")
        if mode == "uvu":
            return _Spec(mo, [("ta", "0", f"{m2}")], "ln", "ta", "ln", f"ln * {m2} + ta")
        if mode == "uvv":
            return _Spec(mo, [("ta", "0", f"{m1}")], "ta", "ln", "ln", f"ta * {m2} + ln")
        if mode == "uuw":
            return _Spec(mo, [("ta", "0", f"{m1}")], "ta", "ta", "ln", f"ta * {mo} + ln")
        if mode == "uuu":
            return _Spec(mo, [], "ln", "ln", "ln", "ln")
        if mode == "uvuv":
            return _Spec(mo, [], f"ln // {m2}", f"ln % {m2}", "ln", "ln")
        if mode == "uvu<v":
            cu, cv = f"cu_{tag}", f"cv_{tag}"
            pre = [
                f"{cu} = tl.zeros_like(ln)",
                f"for tq in range(1, {m1}):",
                f"    {cu} = {cu} + (ln >= tq * ({2 * m1 - 1} - tq) // 2).to(tl.int32)",
                f"{cv} = ln - {cu} * ({2 * m1 - 1} - {cu}) // 2 + {cu} + 1",
            ]
            return _Spec(mo, [], cu, cv, "ln", "ln", pre=pre)
        if mode == "u<vw":
            return _Spec(
                mo, [("ta", "0", f"{m1 - 1}"), ("tb", "ta + 1", f"{m2}")], "ta", "tb", "ln", f"{_q(m1, 'ta', 'tb')} * {mo} + ln"
            )
    elif role == "g1":
        if mode == "uvw":
            return _Spec(m1, [("ta", "0", f"{m2}"), ("tb", "0", f"{mo}")], "ln", "ta", "tb", f"(ln * {m2} + ta) * {mo} + tb")
        if mode == "uvu":
            return _Spec(m1, [("ta", "0", f"{m2}")], "ln", "ta", "ln", f"ln * {m2} + ta")
        if mode == "uvv":
            return _Spec(m1, [("ta", "0", f"{m2}")], "ln", "ta", "ta", f"ln * {m2} + ta")
        if mode == "uuw":
            return _Spec(m1, [("ta", "0", f"{mo}")], "ln", "ln", "ta", f"ln * {mo} + ta")
        if mode == "uuu":
            return _Spec(m1, [], "ln", "ln", "ln", "ln")
        if mode == "uvuv":
            return _Spec(m1, [("ta", "0", f"{m2}")], "ln", "ta", f"ln * {m2} + ta", f"ln * {m2} + ta")
        if mode == "uvu<v":
            q = _q(m1, "ln", "ta")
            return _Spec(m1, [("ta", "1", f"{m2}")], "ln", "ta", q, q, valid="ln < ta")
        if mode == "u<vw":
            q = _q(m1, "ln", "ta")
            return _Spec(
                m1, [("ta", "1", f"{m2}"), ("tb", "0", f"{mo}")], "ln", "ta", "tb", f"{q} * {mo} + tb", valid="ln < ta"
            )
    elif role == "g2":
        if mode == "uvw":
            return _Spec(m2, [("ta", "0", f"{m1}"), ("tb", "0", f"{mo}")], "ta", "ln", "tb", f"(ta * {m2} + ln) * {mo} + tb")
        if mode == "uvu":
            return _Spec(m2, [("ta", "0", f"{m1}")], "ta", "ln", "ta", f"ta * {m2} + ln")
        if mode == "uvv":
            return _Spec(m2, [("ta", "0", f"{m1}")], "ta", "ln", "ln", f"ta * {m2} + ln")
        if mode == "uuw":
            return _Spec(m2, [("ta", "0", f"{mo}")], "ln", "ln", "ta", f"ln * {mo} + ta")
        if mode == "uuu":
            return _Spec(m2, [], "ln", "ln", "ln", "ln")
        if mode == "uvuv":
            return _Spec(m2, [("ta", "0", f"{m1}")], "ta", "ln", f"ta * {m2} + ln", f"ta * {m2} + ln")
        if mode == "uvu<v":
            q = _q(m1, "ta", "ln")
            return _Spec(m2, [("ta", "0", f"{m1 - 1}")], "ta", "ln", q, q, valid="ta < ln")
        if mode == "u<vw":
            q = _q(m1, "ta", "ln")
            return _Spec(
                m2, [("ta", "0", f"{m1 - 1}"), ("tb", "0", f"{mo}")], "ta", "ln", "tb", f"{q} * {mo} + tb", valid="ta < ln"
            )
    raise ValueError(f"no layout for mode {mode!r}, role {role!r}")


_TOKEN = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def _deps(expr: str) -> set:
    """Which of ``ln`` (lane; ``cu_*``/``cv_*`` derive from it), ``ta``, ``tb`` occur."""
    out = set()
    for t in _TOKEN.findall(expr):
        if t == "ln" or t.startswith("cu_") or t.startswith("cv_"):
            out.add("ln")
        elif t in ("ta", "tb"):
            out.add(t)
    return out


def _level(deps: set) -> int:
    return 2 if "tb" in deps else 1 if "ta" in deps else 0


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


# --------------------------------------------------------------------------------------
# Code generation
# --------------------------------------------------------------------------------------


@dataclass
class _Operand:
    vars: Dict[int, str]  # component -> variable
    level: int
    tile: bool


@dataclass
class _Term:
    """One product of the sum a group computes: the pointers standing for x1, x2, weight
    and grad_out (some unused by the role), under an optional constexpr flag."""

    x1: str = "x1_ptr"
    x2: str = "x2_ptr"
    w: str = "w_ptr"
    go: str = "go_ptr"
    flag: Optional[str] = None


_ROFF = {"x1": "r1", "x2": "r2", "w": "rw", "go": "ro"}


class _Gen:
    def __init__(self, prob: TPProblem):
        self.prob = prob
        self.lines: List[str] = []
        self.n = 0

    def emit(self, ind: int, s: str) -> None:
        self.lines.append("    " * ind + s)

    def fresh(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    # ------------------------------------------------------------------ building blocks
    def _load(self, bk, spec: _Spec, ptr: str, which: str, base: int, chan: str, dim: int, comps, flat: bool):
        """Loads components ``comps`` of channel ``chan`` (block at column ``base``, ``dim``
        components per channel) into ``bk`` (statement buckets by loop level)."""
        deps = _deps(chan)
        tile = "ln" in deps
        if tile and spec.valid:
            deps = deps | _deps(spec.valid)
        lvl = len(spec.loops) if flat else _level(deps)
        col = self.fresh("c")
        bk[lvl].append(f"{col} = {base} + ({chan}) * {dim}" if dim != 1 else f"{col} = {base} + ({chan})")
        mask = "m2d"
        if tile and spec.valid:
            mask = self.fresh("vm")
            bk[lvl].append(f"{mask} = m2d & ({spec.valid})[None, :]")
        out = {}
        for c in comps:
            nm = self.fresh(which[0] + which[-1])
            sub = f"{col} + {c}" if c else col
            if tile:
                bk[lvl].append(f"{nm} = _ldt({ptr}, {_ROFF[which]}, {sub}, {mask}, ACC)")
            else:
                bk[lvl].append(f"{nm} = _ldr({ptr}, {_ROFF[which]}, {sub}, rmask, ACC)")
            out[c] = nm
        return _Operand(out, lvl, tile)

    def _contract(self, bk, entries, P: _Operand, Q: _Operand, flat_level: Optional[int]):
        """``res[r] = sum c P[p] Q[q]`` over ``entries (r, p, q, c)``: contracts the cheaper
        operand first (per-row before tile, outer loop before inner)."""
        swap = (Q.tile, Q.level) < (P.tile, P.level)
        F, S = (Q, P) if swap else (P, Q)
        groups: Dict[Tuple[int, int], List[Tuple[int, float]]] = {}
        for r, p, q, c in entries:
            f, s = (q, p) if swap else (p, q)
            groups.setdefault((r, s), []).append((f, c))
        lvl_f = F.level if flat_level is None else flat_level
        lvl = max(F.level, S.level) if flat_level is None else flat_level
        E = {}
        for (r, s), terms in sorted(groups.items()):
            nm = self.fresh("e")
            bk[lvl_f].append(f"{nm} = {_lincomb(terms, F.vars)}")
            E[(r, s)] = nm
        res = {}
        for r in sorted({r for r, _ in E}):
            nm = self.fresh("z")
            bk[lvl].append(f"{nm} = " + " + ".join(f"{E[(rr, s)]} * {S.vars[s]}" for (rr, s) in E if rr == r))
            res[r] = nm
        return res

    def _emit_buckets(self, ind: int, spec: _Spec, bk, inner=None) -> None:
        """Emits the buckets inside ``spec``'s loops; ``inner(ind)`` (if given) emits more
        code at the innermost level, after its bucket."""
        for s in bk[0]:
            self.emit(ind, s)
        for lvl, (var, lo, hi) in enumerate(spec.loops, 1):
            self.emit(ind + lvl - 1, f"for {var} in range({lo}, {hi}):")
            for s in bk[lvl]:
                self.emit(ind + lvl, s)
        depth = ind + len(spec.loops)
        if inner is not None:
            inner(depth)
        elif spec.loops and not bk[len(spec.loops)]:
            self.emit(depth, "pass")

    # ------------------------------------------------------------------ path bodies
    def _path_into(self, ind: int, p: TPPath, role: str, term: _Term, accs: Dict[int, str]) -> None:
        """``accs[r] += (path p's contribution to the group's block)`` for one term:
        role ``out``: ``W z``; ``g1``: ``W sum C x2 go``; ``g2``: ``W sum C x1 go``."""
        spec = _spec(p, role, self._tag(p))
        bk: List[List[str]] = [[] for _ in range(len(spec.loops) + 1)]
        c = p.coef
        if role == "out":
            A = self._load(bk, spec, term.x1, "x1", p.off1, spec.u, p.d1, range(p.d1), False)
            B = self._load(bk, spec, term.x2, "x2", p.off2, spec.v, p.d2, range(p.d2), False)
            res = self._contract(bk, [(k, i, j, c * v) for i, j, k, v in p.nonzeros], A, B, None)
        elif role == "g1":
            B = self._load(bk, spec, term.x2, "x2", p.off2, spec.v, p.d2, range(p.d2), False)
            G = self._load(bk, spec, term.go, "go", p.offo, spec.o, p.dk, range(p.dk), False)
            res = self._contract(bk, [(i, j, k, c * v) for i, j, k, v in p.nonzeros], B, G, None)
        else:
            A = self._load(bk, spec, term.x1, "x1", p.off1, spec.u, p.d1, range(p.d1), False)
            G = self._load(bk, spec, term.go, "go", p.offo, spec.o, p.dk, range(p.dk), False)
            res = self._contract(bk, [(j, i, k, c * v) for i, j, k, v in p.nonzeros], A, G, None)
        deep = len(spec.loops)
        if p.weighted:
            W = self._load(bk, spec, term.w, "w", p.w_off, spec.w, 1, [0], False)
            for r, nm in res.items():
                bk[deep].append(f"{accs[r]} = {accs[r]} + {W.vars[0]} * {nm}")
        else:
            for r, nm in res.items():
                bk[deep].append(f"{accs[r]} = {accs[r]} + {nm}")
        for line in spec.pre:
            self.emit(ind, line)
        self._emit_buckets(ind, spec, bk)

    def _tag(self, p: TPPath) -> str:
        return str(self.prob.paths.index(p))

    # ------------------------------------------------------------------ groups
    def _rows(self, ind: int, rb: str) -> None:
        dim_out = self.prob.dim_out
        self.emit(ind, f"rows = ({rb} + tl.zeros([BN], tl.int64)) * BN + tl.arange(0, BN)")
        self.emit(ind, "rmask = rows < N")
        self.emit(ind, "m2d = rmask[:, None] & lmask[None, :]")
        self.emit(ind, "r1 = rows * s1")
        self.emit(ind, "r2 = rows * s2")
        self.emit(ind, "rw = rows * sw")
        self.emit(ind, f"ro = rows * {dim_out}")

    def _lanes(self, ind: int, ext: int) -> None:
        self.emit(ind, f"ln = tl.arange(0, {_pow2(ext)})")
        self.emit(ind, f"lmask = ln < {ext}")

    def _terms_into(self, ind: int, paths, role: str, terms_of, accs) -> None:
        for p in paths:
            for term in terms_of(p):
                if term.flag:
                    self.emit(ind, f"if {term.flag}:")
                    self._path_into(ind + 1, p, role, term, accs)
                else:
                    self._path_into(ind, p, role, term, accs)

    def out_group(self, ind: int, gid: int, paths: Sequence[TPPath], terms_of, out_ptr: str) -> None:
        """One output block: every path writing it, summed in registers, stored once."""
        p0 = paths[0]
        self.emit(ind, f"if gid == {gid}:")
        ind += 1
        self._lanes(ind, p0.mo)
        self._rows(ind, "pid")
        Lp = _pow2(p0.mo)
        accs = {k: f"acc{k}" for k in range(p0.dk)}
        for k, a in accs.items():
            self.emit(ind, f"{a} = tl.zeros([BN, {Lp}], ACC)")
        self._terms_into(ind, paths, "out", terms_of, accs)
        self.emit(ind, f"cst = {p0.offo} + ln * {p0.dk}")
        for k, a in accs.items():
            self.emit(ind, f"_stt({out_ptr}, ro, cst{f' + {k}' if k else ''}, {a}, m2d)")

    def in_group(self, ind: int, gid: int, which: str, paths: Sequence[TPPath], terms_of, g_ptr: str) -> None:
        """One block of x1 (``which='g1'``) or x2 (``'g2'``): gradient rows, or their sum
        over rows (``RED1``/``RED2``: partial sums of the first ``P1``/``P2`` programs)."""
        p0 = paths[0]
        m, d, off, width = (
            (p0.m1, p0.d1, p0.off1, self.prob.dim1) if which == "g1" else (p0.m2, p0.d2, p0.off2, self.prob.dim2)
        )
        P, RED = ("P1", "RED1") if which == "g1" else ("P2", "RED2")
        Lp = _pow2(m)
        self.emit(ind, f"if (gid == {gid}) & (pid < {P}):")
        ind += 1
        self._lanes(ind, m)
        self.emit(ind, f"cst = {off} + ln * {d}")
        reds = {i: f"red{i}" for i in range(d)}
        for r in reds.values():
            self.emit(ind, f"{r} = tl.zeros([{Lp}], ACC)")
        self.emit(ind, f"for rb in range(pid, NB, {P}):")
        ind += 1
        self._rows(ind, "rb")
        accs = {i: f"acc{i}" for i in range(d)}
        for a in accs.values():
            self.emit(ind, f"{a} = tl.zeros([BN, {Lp}], ACC)")
        self._terms_into(ind, paths, which, terms_of, accs)
        self.emit(ind, f"if {RED}:")
        for i, a in accs.items():
            self.emit(ind + 1, f"{reds[i]} = {reds[i]} + tl.sum({a}, axis=0)")
        self.emit(ind, "else:")
        for i, a in accs.items():
            self.emit(ind + 1, f"_stt({g_ptr}, rows * {width}, cst{f' + {i}' if i else ''}, {a}, m2d)")
        ind -= 1
        self.emit(ind, f"if {RED}:")
        for i, r in reds.items():
            self.emit(ind + 1, f"_st1({g_ptr}, pid * {width} + cst{f' + {i}' if i else ''}, {r}, lmask)")

    def w_group(self, ind: int, gid: int, p: TPPath, terms: Sequence[_Term], gw_ptr: str) -> None:
        """The weight slice of path ``p``: ``sum_k z_k go_k`` per weight, the row loop
        inside the channel loops (each iteration owns different weights)."""
        spec = _spec(p, "out", self._tag(p))
        Lp = _pow2(spec.ext)
        dim_w = self.prob.dim_w
        self.emit(ind, f"if (gid == {gid}) & (pid < PW):")
        ind += 1
        self._lanes(ind, spec.ext)
        for line in spec.pre:
            self.emit(ind, line)
        deep = len(spec.loops)
        bk: List[List[str]] = [[] for _ in range(deep + 1)]
        bk[deep].append(f"cw = {p.w_off} + ({spec.w})")
        bk[deep].append(f"red = tl.zeros([{Lp}], ACC)")
        body: List[str] = []

        def inner(i0: int) -> None:
            for s in bk[deep]:
                self.emit(i0, s)
            self.emit(i0, "for rb in range(pid, NB, PW):")
            self._rows(i0 + 1, "rb")
            self.emit(i0 + 1, f"t = tl.zeros([BN, {Lp}], ACC)")
            for s in body:
                self.emit(i0 + 1, s)
            self.emit(i0 + 1, "if REDW:")
            self.emit(i0 + 2, "red = red + tl.sum(t, axis=0)")
            self.emit(i0 + 1, "else:")
            self.emit(i0 + 2, f"_stt({gw_ptr}, rows * {dim_w}, cw, t, m2d)")
            self.emit(i0, "if REDW:")
            self.emit(i0 + 1, f"_st1({gw_ptr}, pid * {dim_w} + cw, red, lmask)")

        # Everything below depends on the rows, so it all sits in the row loop (level `deep`).
        sub: List[List[str]] = [[] for _ in range(deep + 1)]
        G = self._load(sub, spec, terms[0].go, "go", p.offo, spec.o, p.dk, range(p.dk), True)
        body.extend(sub[deep])
        for term in terms:
            sub = [[] for _ in range(deep + 1)]
            A = self._load(sub, spec, term.x1, "x1", p.off1, spec.u, p.d1, range(p.d1), True)
            B = self._load(sub, spec, term.x2, "x2", p.off2, spec.v, p.d2, range(p.d2), True)
            z = self._contract(sub, [(k, i, j, p.coef * v) for i, j, k, v in p.nonzeros], A, B, deep)
            dot = " + ".join(f"{nm} * {G.vars[k]}" for k, nm in z.items())
            sub[deep].append(f"t = t + ({dot})")
            if term.flag:
                body.append(f"if {term.flag}:")
                body.extend("    " + s for s in sub[deep])
            else:
                body.extend(sub[deep])
        self._emit_buckets(ind, spec, [bk[i] if i < deep else [] for i in range(deep + 1)], inner)


def _lincomb(terms: Sequence[Tuple[int, float]], names: Dict[int, str]) -> str:
    out = ""
    for f, c in terms:
        prod = f"{abs(c)!r} * {names[f]}"
        if not out:
            out = prod if c >= 0 else f"-{prod}"
        else:
            out += (" - " if c < 0 else " + ") + prod
    return out


@dataclass(frozen=True)
class _Groups:
    out: Tuple[Tuple[TPPath, ...], ...]
    in1: Tuple[Tuple[TPPath, ...], ...]
    in2: Tuple[Tuple[TPPath, ...], ...]
    w: Tuple[TPPath, ...]


def _groups(prob: TPProblem) -> _Groups:
    def by(key):
        d: Dict[int, List[TPPath]] = {}
        for p in prob.paths:
            d.setdefault(key(p), []).append(p)
        return tuple(tuple(v) for _, v in sorted(d.items()))

    return _Groups(
        by(lambda p: p.offo), by(lambda p: p.off1), by(lambda p: p.off2), tuple(p for p in prob.paths if p.weighted)
    )


_SIGNATURES = {
    "forward": "x1_ptr, x2_ptr, w_ptr, out_ptr, N, s1, s2, sw, NB, ACC: tl.constexpr, BN: tl.constexpr",
    "backward": (
        "go_ptr, x1_ptr, x2_ptr, w_ptr, g1_ptr, g2_ptr, gw_ptr, N, s1, s2, sw, NB, P1, P2, PW, "
        "NEED1: tl.constexpr, NEED2: tl.constexpr, NEEDW: tl.constexpr, "
        "RED1: tl.constexpr, RED2: tl.constexpr, REDW: tl.constexpr, ACC: tl.constexpr, BN: tl.constexpr"
    ),
    "double_backward": (
        "gg1_ptr, gg2_ptr, ggw_ptr, go_ptr, x1_ptr, x2_ptr, w_ptr, ggo_ptr, g1_ptr, g2_ptr, gw_ptr, "
        "N, s1, s2, sw, NB, P1, P2, PW, HAS1: tl.constexpr, HAS2: tl.constexpr, HASW: tl.constexpr, "
        "RED1: tl.constexpr, RED2: tl.constexpr, REDW: tl.constexpr, ACC: tl.constexpr, BN: tl.constexpr"
    ),
}


def _prologue(g: "_Gen", doc: str, imports: Sequence[str], signature: str) -> None:
    """The generated module's header and the kernel's first lines (shared with the
    convolution's generator, kernels/tp_conv.py): program ids ``pid`` (rows) and ``gid``
    (the group)."""
    g.emit(0, f'"""{doc}"""')
    g.emit(0, "import triton")
    g.emit(0, "import triton.language as tl")
    g.emit(0, "")
    for line in imports:
        g.emit(0, line)
    g.emit(0, "")
    g.emit(0, "")
    g.emit(0, "@triton.jit")
    g.emit(0, f"def kernel({signature}):")
    g.emit(1, "pid = tl.program_id(0)")
    g.emit(1, "gid = tl.program_id(1)")


def generate(problem: str, kind: str) -> str:
    """The Python source of the ``kind`` kernel (``forward``, ``backward``,
    ``double_backward``) of ``problem``; its kernel is named ``kernel``."""
    prob = decode(problem)
    grp = _groups(prob)
    g = _Gen(prob)
    _prologue(g, f"Generated by {__name__} (version {GENERATOR_VERSION}): {kind} tensor-product kernel.",
              [f"from {__name__} import _ldr, _ldt, _st1, _stt"], _SIGNATURES[kind])
    gid = 0
    plain = _Term()
    if kind == "forward":
        for paths in grp.out:
            g.out_group(1, gid, paths, lambda p: [plain], "out_ptr")
            gid += 1
    elif kind == "backward":
        for which, blocks, need in (("g1", grp.in1, "NEED1"), ("g2", grp.in2, "NEED2")):
            for paths in blocks:
                g.emit(1, f"if {need}:")
                g.in_group(2, gid, which, paths, lambda p: [plain], f"{which}_ptr")
                gid += 1
        for p in grp.w:
            g.emit(1, "if NEEDW:")
            g.w_group(2, gid, p, [plain], "gw_ptr")
            gid += 1
    elif kind == "double_backward":

        def out_terms(p):
            t = [_Term(x1="gg1_ptr", flag="HAS1"), _Term(x2="gg2_ptr", flag="HAS2")]
            return t + ([_Term(w="ggw_ptr", flag="HASW")] if p.weighted else [])

        def g1_terms(p):
            return [_Term(x2="gg2_ptr", flag="HAS2")] + ([_Term(w="ggw_ptr", flag="HASW")] if p.weighted else [])

        def g2_terms(p):
            return [_Term(x1="gg1_ptr", flag="HAS1")] + ([_Term(w="ggw_ptr", flag="HASW")] if p.weighted else [])

        for paths in grp.out:
            g.out_group(1, gid, paths, out_terms, "ggo_ptr")
            gid += 1
        for paths in grp.in1:
            g.in_group(1, gid, "g1", paths, g1_terms, "g1_ptr")
            gid += 1
        for paths in grp.in2:
            g.in_group(1, gid, "g2", paths, g2_terms, "g2_ptr")
            gid += 1
        for p in grp.w:
            g.w_group(1, gid, p, [_Term(x1="gg1_ptr", flag="HAS1"), _Term(x2="gg2_ptr", flag="HAS2")], "gw_ptr")
            gid += 1
    else:
        raise ValueError(f"unknown kernel kind {kind!r}")
    return "\n".join(g.lines) + "\n"


# --------------------------------------------------------------------------------------
# Module cache
# --------------------------------------------------------------------------------------


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}-interpreter"


def _kernel(problem: str, kind: str, device: torch.device):
    import equiops

    parts = (problem, kind, _device_name(device), equiops.__version__, str(GENERATOR_VERSION))
    return _codecache.load(_NAMESPACE, parts, lambda: generate(problem, kind)).kernel


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------

_ACC = {torch.float64: tl.float64, torch.float32: tl.float32, torch.float16: tl.float32, torch.bfloat16: tl.float32}


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _max_lanes(prob: TPProblem) -> int:
    ext = [1]
    for p in prob.paths:
        ext += [p.m1, p.m2, p.mo]
    return _pow2(max(ext))


def _launch_params(prob: TPProblem, block_rows: Optional[int]) -> Tuple[int, int]:
    """Rows per program (a power of two) and warps: about 512 tile elements per program."""
    lanes = _max_lanes(prob)
    bn = block_rows if block_rows is not None else max(2, min(32, 512 // lanes))
    if bn & (bn - 1):
        raise ValueError(f"block_rows must be a power of two, got {bn}")
    elems = bn * lanes
    warps = 4 if elems >= 1024 else 2 if elems >= 256 else 1
    return bn, warps


def _check_operands(operands, ref: Tensor, ref_name: str) -> None:
    """Each ``(tensor, width, name)`` is 2-D ``(rows, width)``, contiguous, with ``ref``'s
    dtype and device (also used by kernels/tp_conv.py)."""
    for t, d, name in operands:
        if t.dim() != 2 or t.shape[1] != d:
            raise ValueError(f"{name} must be (rows, {d}), got {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
        if t.dtype != ref.dtype:
            raise TypeError(f"{name} must have dtype {ref.dtype} like {ref_name}, got {t.dtype}")
        if t.device != ref.device:
            raise ValueError(f"{name} must be on {ref.device} like {ref_name}, got {t.device}")


def _check(x1: Tensor, x2: Tensor, weight: Tensor, prob: TPProblem) -> int:
    _check_operands(((x1, prob.dim1, "x1"), (x2, prob.dim2, "x2"), (weight, prob.dim_w, "weight")), x1, "x1")
    if x1.dtype not in _ACC:
        raise TypeError(f"unsupported dtype {x1.dtype}")
    # N: the first row count other than 1 (0 included: an empty batch with a broadcast
    # input, e.g. shared weights, has N = 0), as the C++ kernels decide it.
    N, first = 1, None
    for t, name in ((x1, "x1"), (x2, "x2"), (weight, "weight")):
        if t.shape[0] == 1:
            continue
        if first is None:
            N, first = t.shape[0], name
        elif t.shape[0] != N:
            raise ValueError(f"{name} has {t.shape[0]} rows but {first} has {N}; every input must have 1 or N rows")
    return N


def _stride(t: Tensor, N: int) -> int:
    return 0 if t.shape[0] == 1 else t.shape[1]


def _ptr(t: Optional[Tensor], fallback: Tensor) -> Tensor:
    """A tensor to pass for a pointer argument (empty / absent ones get a valid dummy)."""
    return t if t is not None and t.numel() > 0 else fallback


def _covered(prob: TPProblem, which: str) -> bool:
    """Whether every column of the output ``which`` is written by some group."""
    if which == "out":
        spans, width = {(p.offo, p.mo * p.dk) for p in prob.paths}, prob.dim_out
    elif which == "g1":
        spans, width = {(p.off1, p.m1 * p.d1) for p in prob.paths}, prob.dim1
    elif which == "g2":
        spans, width = {(p.off2, p.m2 * p.d2) for p in prob.paths}, prob.dim2
    else:
        spans, width = {(p.w_off, p.w_numel) for p in prob.paths if p.weighted}, prob.dim_w
    return sum(n for _, n in spans) == width


class _Grad:
    """An input-shaped gradient: direct rows, or partial rows summed afterwards."""

    def __init__(self, like: Tensor, N: int, NB: int, width: int, covered: bool, programs: Optional[int] = None):
        self.like = like
        self.reduce = like.shape[0] == 1 and N > 1
        # The module constant is read per call (tests lower it to exercise the row loop);
        # ``programs``: another module's constant (kernels/tp_conv.py).
        self.P = min(NB, REDUCE_PROGRAMS if programs is None else programs) if self.reduce else NB
        make = torch.empty if covered else torch.zeros
        if self.reduce:
            self.buf = make(self.P, width, dtype=_acc_dtype(like.dtype), device=like.device)
        else:
            self.buf = make(like.shape[0], width, dtype=like.dtype, device=like.device)

    def result(self) -> Tensor:
        if self.reduce:
            return self.buf.sum(0, keepdim=True).to(self.like.dtype)
        return self.buf


def _device_ctx(t: Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


def forward(x1: Tensor, x2: Tensor, weight: Tensor, problem: str, *, block_rows: Optional[int] = None) -> Tensor:
    """``out (N, dim_out)`` of the tensor product ``problem`` (an encoded problem string)."""
    prob = decode(problem)
    N = _check(x1, x2, weight, prob)
    grp = _groups(prob)
    make = torch.empty if _covered(prob, "out") else torch.zeros
    out = make(N, prob.dim_out, dtype=x1.dtype, device=x1.device)
    if N == 0 or not grp.out:
        return out
    bn, warps = _launch_params(prob, block_rows)
    NB = triton.cdiv(N, bn)
    kernel = _kernel(problem, "forward", x1.device)
    with _device_ctx(x1):
        kernel[(NB, len(grp.out))](
            x1, x2, _ptr(weight, x1), out, N, _stride(x1, N), _stride(x2, N), _stride(weight, N), NB,
            ACC=_ACC[x1.dtype], BN=bn, num_warps=warps,
        )  # fmt: skip
    return out


def backward(
    grad_out: Tensor,
    x1: Tensor,
    x2: Tensor,
    weight: Tensor,
    problem: str,
    need: Sequence[bool] = (True, True, True),
    *,
    block_rows: Optional[int] = None,
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """``(g1, g2, gw)``: gradients of ``sum(grad_out * out)`` w.r.t. x1, x2, weight, each
    of its input's shape (a broadcast input gets the sum over rows); ``None`` where
    ``need`` is false."""
    prob = decode(problem)
    N = _check(x1, x2, weight, prob)
    if tuple(grad_out.shape) != (N, prob.dim_out) or not grad_out.is_contiguous():
        raise ValueError(f"grad_out must be contiguous ({N}, {prob.dim_out}), got {tuple(grad_out.shape)}")
    grp = _groups(prob)
    bn, warps = _launch_params(prob, block_rows)
    NB = max(triton.cdiv(N, bn), 1)
    need = tuple(bool(n) for n in need)
    grads = [
        _Grad(t, N, NB, w, _covered(prob, k)) if n else None
        for t, w, k, n in ((x1, prob.dim1, "g1", need[0]), (x2, prob.dim2, "g2", need[1]), (weight, prob.dim_w, "gw", need[2]))
    ]
    ngroups = len(grp.in1) + len(grp.in2) + len(grp.w)
    if N > 0 and ngroups and any(g is not None and g.buf.numel() for g in grads):
        kernel = _kernel(problem, "backward", x1.device)
        ptrs = [_ptr(g.buf if g is not None else None, x1) for g in grads]
        Ps = [g.P if g is not None else NB for g in grads]
        with _device_ctx(x1):
            kernel[(NB, ngroups)](
                grad_out, x1, x2, _ptr(weight, x1), *ptrs, N, _stride(x1, N), _stride(x2, N), _stride(weight, N), NB, *Ps,
                NEED1=need[0] and grads[0].buf.numel() > 0, NEED2=need[1] and grads[1].buf.numel() > 0,
                NEEDW=need[2] and grads[2].buf.numel() > 0,
                RED1=bool(grads[0] and grads[0].reduce), RED2=bool(grads[1] and grads[1].reduce),
                REDW=bool(grads[2] and grads[2].reduce), ACC=_ACC[x1.dtype], BN=bn, num_warps=warps,
            )  # fmt: skip
    elif N == 0:
        for g in grads:
            if g is not None:
                g.buf.zero_()
    return tuple(g.result() if g is not None else None for g in grads)


def double_backward(
    gg1: Optional[Tensor],
    gg2: Optional[Tensor],
    ggw: Optional[Tensor],
    grad_out: Tensor,
    x1: Tensor,
    x2: Tensor,
    weight: Tensor,
    problem: str,
    *,
    block_rows: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(g_grad_out, g1, g2, gw)``: the derivatives of ``<gg1, g1> + <gg2, g2> + <ggw, gw>``
    (``g*`` the backward's outputs) w.r.t. grad_out, x1, x2, weight; ``gg*`` may be None
    (zero) and otherwise have the shape of x1, x2, weight."""
    prob = decode(problem)
    N = _check(x1, x2, weight, prob)
    if tuple(grad_out.shape) != (N, prob.dim_out) or not grad_out.is_contiguous():
        raise ValueError(f"grad_out must be contiguous ({N}, {prob.dim_out}), got {tuple(grad_out.shape)}")
    for gg, t, name in ((gg1, x1, "gg1"), (gg2, x2, "gg2"), (ggw, weight, "ggw")):
        if gg is not None and (gg.shape != t.shape or gg.dtype != t.dtype or not gg.is_contiguous()):
            raise ValueError(f"{name} must be contiguous with the shape and dtype of its input {tuple(t.shape)}")
    grp = _groups(prob)
    bn, warps = _launch_params(prob, block_rows)
    NB = max(triton.cdiv(N, bn), 1)
    ggo = (torch.empty if _covered(prob, "out") else torch.zeros)(N, prob.dim_out, dtype=x1.dtype, device=x1.device)
    grads = [
        _Grad(t, N, NB, w, _covered(prob, k))
        for t, w, k in ((x1, prob.dim1, "g1"), (x2, prob.dim2, "g2"), (weight, prob.dim_w, "gw"))
    ]
    ngroups = len(grp.out) + len(grp.in1) + len(grp.in2) + len(grp.w)
    if N > 0 and ngroups:
        kernel = _kernel(problem, "double_backward", x1.device)
        with _device_ctx(x1):
            kernel[(NB, ngroups)](
                _ptr(gg1, x1), _ptr(gg2, x1), _ptr(ggw, x1), grad_out, x1, x2, _ptr(weight, x1), ggo,
                *[_ptr(g.buf, x1) for g in grads], N, _stride(x1, N), _stride(x2, N), _stride(weight, N), NB,
                *[g.P for g in grads], HAS1=gg1 is not None, HAS2=gg2 is not None,
                HASW=ggw is not None and ggw.numel() > 0,
                RED1=grads[0].reduce, RED2=grads[1].reduce, REDW=grads[2].reduce,
                ACC=_ACC[x1.dtype], BN=bn, num_warps=warps,
            )  # fmt: skip
    else:
        ggo.zero_()
        for g in grads:
            g.buf.zero_()
    return (ggo,) + tuple(g.result() for g in grads)
