r"""The problem description of a Clebsch-Gordan tensor product: what every kernel runs.

A tensor product is fixed by its irreps and instructions (e3nn's semantics, see
``../shared/design/CONVENTIONS.md``). :func:`build_problem` turns them into a
:class:`TPProblem`: one :class:`TPPath` per instruction that does any work, each with its
column offsets, multiplicities, connection mode, weight offset, normalization
coefficient and the nonzero entries of its Clebsch-Gordan block (``wigner_3j``).

The problem travels to the operators as one string, :meth:`TPProblem.encode`: plain
text, floats written in hexadecimal so they round-trip exactly. A string (rather than
tensors) because every consumer needs the *content* at trace time: the fake kernels
need output widths, and the GPU code generators emit code per problem, while under
``torch.compile`` / ``torch.export`` tensors are fake. A string is a constant in a
compiled graph, an exported program and a pickle; :func:`decode` parses it back and
caches the result (the C++ kernels parse and cache it the same way).

Semantics of one path ``p`` (rows ``n``; ``x1[n, u, i]`` is block ``i_in1`` of ``x1``
viewed as ``(mul1, 2 l1 + 1)``; likewise ``x2[n, v, j]`` and ``out[n, w, k]``;
``C = wigner_3j(l1, l2, l_out)``; ``c`` the path coefficient; ``W`` the path's slice of
the flat weight row, row-major in ``path_shape``)::

    z[n, u, v, k] = sum_ij C[i, j, k] x1[n, u, i] x2[n, v, j]
    uvw:   out[n, w, k]      += c sum_uv W[u, v, w] z[n, u, v, k]
    uvu:   out[n, u, k]      += c sum_v  W[u, v]    z[n, u, v, k]   (W = 1 if unweighted)
    uvv:   out[n, v, k]      += c sum_u  W[u, v]    z[n, u, v, k]   (W = 1 if unweighted)
    uuw:   out[n, w, k]      += c sum_u  W[u, w]    z[n, u, u, k]   (unweighted: mul_out 1)
    uuu:   out[n, u, k]      += c        W[u]       z[n, u, u, k]
    uvuv:  out[n, u m2 + v, k] += c      W[u, v]    z[n, u, v, k]
    uvu<v: out[n, q, k]      += c        W[q]       z[n, u_q, v_q, k]
    u<vw:  out[n, w, k]      += c sum_q  W[q, w]    z[n, u_q, v_q, k]

with ``(u_q, v_q)`` the pairs ``u < v`` in ``torch.triu_indices`` order. Output blocks no
path writes are zero.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

from . import so3
from .irreps import Irreps

__all__ = ["MODES", "TPPath", "TPProblem", "build_problem", "decode", "path_shape"]

MODES = ("uvw", "uvu", "uvv", "uuw", "uuu", "uvuv", "uvu<v", "u<vw")
# Modes whose every path must carry weights (e3nn asserts the same).
_WEIGHT_REQUIRED = ("uvw", "u<vw")
_FORMAT = "equiops-tp-1"


def path_shape(mode: str, m1: int, m2: int, mo: int) -> Tuple[int, ...]:
    """e3nn's weight shape of one path (also its shape when unweighted)."""
    pairs = m1 * (m2 - 1) // 2
    return {
        "uvw": (m1, m2, mo),
        "uvu": (m1, m2),
        "uvv": (m1, m2),
        "uuw": (m1, mo),
        "uuu": (m1,),
        "uvuv": (m1, m2),
        "uvu<v": (pairs,),
        "u<vw": (pairs, mo),
    }[mode]


def _num_elements(mode: str, m1: int, m2: int) -> int:
    # e3nn's fan-in per output element, for path_normalization.
    return {
        "uvw": m1 * m2,
        "uvu": m2,
        "uvv": m1,
        "uuw": m1,
        "uuu": 1,
        "uvuv": 1,
        "uvu<v": 1,
        "u<vw": m1 * (m2 - 1) // 2,
    }[mode]


@functools.lru_cache(maxsize=None)
def cg_nonzeros(l1: int, l2: int, lo: int) -> Tuple[Tuple[int, int, int, float], ...]:
    """Nonzero entries ``(i, j, k, C)`` of ``wigner_3j(l1, l2, lo)`` in float64, sorted.

    Entries below 1e-13 of the largest are rounding residue of the real basis change
    (exact zeros of the symbol) and are dropped; e3nn's dense einsum multiplies them,
    which changes results by ~1e-17 relative."""
    C = so3.wigner_3j(l1, l2, lo, dtype=torch.float64)
    keep = C.abs() > 1e-13 * C.abs().max()
    return tuple((i, j, k, float(C[i, j, k])) for i, j, k in keep.nonzero().tolist())


@dataclass(frozen=True)
class TPPath:
    """One instruction of the product, ready for a kernel (see the module docstring)."""

    mode: str
    l1: int
    l2: int
    lo: int
    m1: int
    m2: int
    mo: int
    off1: int  # first column of block i_in1 in x1
    off2: int
    offo: int
    w_off: int  # first column of this path's weights in the flat weight row; -1: unweighted
    coef: float  # e3nn's normalized path weight, sqrt(alpha / x * path_weight * out_var)
    instruction: int  # index of the instruction in the module's list

    @property
    def d1(self) -> int:
        return 2 * self.l1 + 1

    @property
    def d2(self) -> int:
        return 2 * self.l2 + 1

    @property
    def dk(self) -> int:
        return 2 * self.lo + 1

    @property
    def weighted(self) -> bool:
        return self.w_off >= 0

    @property
    def shape(self) -> Tuple[int, ...]:
        return path_shape(self.mode, self.m1, self.m2, self.mo)

    @property
    def w_numel(self) -> int:
        return math.prod(self.shape) if self.weighted else 0

    @property
    def nonzeros(self) -> Tuple[Tuple[int, int, int, float], ...]:
        return cg_nonzeros(self.l1, self.l2, self.lo)

    def pairs(self) -> List[Tuple[int, int]]:
        """The channel pairs ``(u, v)`` of ``z`` this path reads, in weight order."""
        if self.mode in ("uuw", "uuu"):
            return [(u, u) for u in range(self.m1)]
        if self.mode in ("uvu<v", "u<vw"):
            return [(u, v) for u in range(self.m1) for v in range(u + 1, self.m2)]
        return [(u, v) for u in range(self.m1) for v in range(self.m2)]


@dataclass(frozen=True)
class TPProblem:
    """Widths and paths of one tensor product. ``dim_w`` is e3nn's ``weight_numel``."""

    dim1: int
    dim2: int
    dim_out: int
    dim_w: int
    paths: Tuple[TPPath, ...]
    # Normalized coefficient of every instruction, including those dropped from `paths`
    # for being empty (modules report them); not part of the encoded string.
    coefs: Tuple[float, ...] = ()

    def encode(self) -> str:
        """The problem as the string the operators take (exact; see :func:`decode`)."""
        lines = [f"{_FORMAT} {self.dim1} {self.dim2} {self.dim_out} {self.dim_w} {len(self.paths)}"]
        for p in self.paths:
            nz = p.nonzeros
            head = (
                f"{p.mode} {p.l1} {p.l2} {p.lo} {p.m1} {p.m2} {p.mo} {p.off1} {p.off2} {p.offo} "
                f"{p.w_off} {p.coef.hex()} {p.instruction} {len(nz)}"
            )
            lines.append(head + "".join(f" {i} {j} {k} {c.hex()}" for i, j, k, c in nz))
        return "\n".join(lines)

    def flops_per_row(self) -> int:
        """Multiply-adds x 2 per row of the forward, counted from the CG nonzeros:
        each channel pair costs ``2 nnz`` for ``z`` plus ``2 dk`` per weight it meets."""
        total = 0
        for p in self.paths:
            pairs = len(p.pairs())
            mix = p.mo if p.mode in ("uvw", "uuw", "u<vw") else 1
            total += pairs * (2 * len(p.nonzeros) + 2 * p.dk * mix)
        return total


def decode(problem: str) -> TPProblem:
    """Parse :meth:`TPProblem.encode`'s string (cached; raises ``ValueError`` if malformed)."""
    return _decode(problem)


@functools.lru_cache(maxsize=256)
def _decode(problem: str) -> TPProblem:
    try:
        lines = problem.split("\n")
        head = lines[0].split()
        if head[0] != _FORMAT:
            raise ValueError(f"unknown format {head[0]!r}")
        dim1, dim2, dim_out, dim_w, npaths = (int(t) for t in head[1:6])
        paths = []
        for line in lines[1 : 1 + npaths]:
            t = line.split()
            mode = t[0]
            ints = [int(v) for v in t[1:11]]
            coef = float.fromhex(t[11])
            p = TPPath(mode, *ints[:3], *ints[3:6], *ints[6:9], ints[9], coef, int(t[12]))
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}")
            paths.append(p)
        if len(paths) != npaths:
            raise ValueError("truncated")
    except (IndexError, ValueError) as e:
        raise ValueError(f"equiops: malformed tensor-product problem string ({e})") from None
    return TPProblem(dim1, dim2, dim_out, dim_w, tuple(paths))


def _norm_list(var, n: int, what: str) -> List[float]:
    if var is None:
        return [1.0] * n
    out = [float(v) for v in var]
    if len(out) != n:
        raise ValueError(f"{what} must have one entry per irrep ({n}), got {len(out)}")
    return out


def build_problem(
    irreps_in1,
    irreps_in2,
    irreps_out,
    instructions: Sequence[tuple],
    irrep_normalization: str = "component",
    path_normalization: str = "element",
    in1_var=None,
    in2_var=None,
    out_var=None,
) -> TPProblem:
    """The problem of ``e3nn.o3.TensorProduct(irreps_in1, irreps_in2, irreps_out,
    instructions, ...)``, validated, with e3nn's normalization coefficients.

    ``instructions``: tuples ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])``.
    Raises ``ValueError`` / ``TypeError`` naming the offending instruction."""
    in1, in2, out = Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out)
    if irrep_normalization not in ("component", "norm", "none"):
        raise ValueError(f"irrep_normalization must be 'component', 'norm' or 'none', got {irrep_normalization!r}")
    if path_normalization not in ("element", "path", "none"):
        raise ValueError(f"path_normalization must be 'element', 'path' or 'none', got {path_normalization!r}")
    v1 = _norm_list(in1_var, len(in1), "in1_var")
    v2 = _norm_list(in2_var, len(in2), "in2_var")
    vo = _norm_list(out_var, len(out), "out_var")

    ins = []
    for n, raw in enumerate(instructions):
        if not isinstance(raw, (tuple, list)) or len(raw) not in (5, 6):
            raise ValueError(
                f"instruction {n} must be (i_in1, i_in2, i_out, mode, has_weight[, path_weight]), got {raw!r}"
            )
        a, b, c, mode, has_w = raw[:5]
        pw = raw[5] if len(raw) == 6 else 1.0
        for idx, name, irreps in ((a, "i_in1", in1), (b, "i_in2", in2), (c, "i_out", out)):
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise TypeError(f"instruction {n}: {name} must be an int, got {idx!r}")
            if not 0 <= idx < len(irreps):
                raise ValueError(f"instruction {n}: {name}={idx} is out of range for {irreps} ({len(irreps)} irreps)")
        if mode not in MODES:
            raise ValueError(f"instruction {n}: mode must be one of {MODES}, got {mode!r}")
        if not isinstance(has_w, bool):
            raise TypeError(f"instruction {n}: has_weight must be a bool, got {has_w!r}")
        try:
            pw = float(pw)
        except (TypeError, ValueError):
            raise TypeError(f"instruction {n}: path_weight must be a number, got {pw!r}") from None
        (m1, ir1), (m2, ir2), (mo, iro) = in1[a], in2[b], out[c]
        if ir1.p * ir2.p != iro.p:
            raise ValueError(f"instruction {n}: parity violated: {ir1} x {ir2} cannot give {iro}")
        if not abs(ir1.l - ir2.l) <= iro.l <= ir1.l + ir2.l:
            raise ValueError(
                f"instruction {n}: selection rule violated: {ir1} x {ir2} gives degrees "
                f"{abs(ir1.l - ir2.l)}..{ir1.l + ir2.l}, not {iro.l}"
            )
        need = {
            "uvu": ("mul_in1 == mul_out", m1 == mo),
            "uvv": ("mul_in2 == mul_out", m2 == mo),
            "uuw": ("mul_in1 == mul_in2", m1 == m2),
            "uuu": ("mul_in1 == mul_in2 == mul_out", m1 == m2 == mo),
            "uvuv": ("mul_in1 * mul_in2 == mul_out", m1 * m2 == mo),
            "uvu<v": ("mul_in1 == mul_in2 and mul_out == mul_in1 (mul_in1 - 1) / 2", m1 == m2 and mo == m1 * (m1 - 1) // 2),
            "u<vw": ("mul_in1 == mul_in2", m1 == m2),
        }.get(mode)
        if need is not None and not need[1]:
            raise ValueError(
                f"instruction {n}: mode {mode!r} needs {need[0]}, got mul_in1={m1}, mul_in2={m2}, mul_out={mo}"
            )
        if mode == "uuw" and not has_w and mo != 1:
            raise ValueError(f"instruction {n}: unweighted 'uuw' needs mul_out == 1, got {mo}")
        if mode in _WEIGHT_REQUIRED and not has_w:
            raise ValueError(f"instruction {n}: mode {mode!r} must have weights (has_weight=True)")
        ins.append((a, b, c, mode, has_w, pw, m1, m2, mo))

    def alpha_of(k):
        a, b, c, mode, _, pw, m1, m2, _ = ins[k]
        l1, l2, lo = in1[a].ir.l, in2[b].ir.l, out[c].ir.l
        alpha = {"component": 2 * lo + 1, "norm": (2 * l1 + 1) * (2 * l2 + 1), "none": 1}[irrep_normalization]
        if path_normalization == "element":
            x = sum(v1[i[0]] * v2[i[1]] * _num_elements(i[3], i[6], i[7]) for i in ins if i[2] == c)
        elif path_normalization == "path":
            x = v1[a] * v2[b] * _num_elements(mode, m1, m2) * sum(1 for i in ins if i[2] == c)
        else:
            x = 1
        if x > 0.0:
            alpha /= x
        return math.sqrt(alpha * vo[c] * pw)

    off1 = [s.start for s in in1.slices()]
    off2 = [s.start for s in in2.slices()]
    offo = [s.start for s in out.slices()]
    paths, w_off = [], 0
    coefs = tuple(alpha_of(k) for k in range(len(ins)))
    for k, (a, b, c, mode, has_w, pw, m1, m2, mo) in enumerate(ins):
        shape = path_shape(mode, m1, m2, mo)
        numel = math.prod(shape)
        coef = coefs[k]
        this_w = w_off if has_w else -1
        if has_w:
            w_off += numel
        # e3nn drops paths with an empty weight shape or empty blocks; they write nothing.
        if numel == 0 or m1 == 0 or m2 == 0 or mo == 0:
            continue
        paths.append(
            TPPath(mode, in1[a].ir.l, in2[b].ir.l, out[c].ir.l, m1, m2, mo, off1[a], off2[b], offo[c], this_w, coef, k)
        )
    return TPProblem(in1.dim, in2.dim, out.dim, w_off, tuple(paths), coefs)
