r"""Irreducible representations of O(3) and their direct sums, with e3nn 0.6 semantics.

* ``Irrep(l, p)``: degree ``l >= 0`` and parity ``p`` in ``(1, -1)``; written ``"1o"``
  (letters ``e`` = +1, ``o`` = -1, ``y`` = ``(-1)^l``).  Behaves as the tuple ``(l, p)``.
* ``Irreps("16x0e+8x1o")``: a tuple of ``_MulIr(mul, ir)``.  Data layout is "mul_ir":
  block ``i`` occupies ``irreps.slices()[i]`` and is laid out ``[mul, 2l+1]`` with ``m``
  fastest; blocks are concatenated in the listed order.

Both are immutable, hashable and compare equal to the corresponding ``e3nn.o3`` objects
(they are nested tuples of ints, like e3nn's), and accept e3nn objects wherever an irrep
or irreps is expected.  This module does not import e3nn.

Deliberate differences from e3nn 0.6 (everything else follows it):

* ``Irreps == str`` and ``Irrep == str`` parse the string (e3nn compares tuple to str: False).
* ``Irreps.filter(keep=...)``/``drop=`` with a string or ``Irreps`` keeps/drops those irreps
  (e3nn 0.6 keeps nothing / drops nothing in that case).
* ``Irrep * int`` is ``int * Irrep`` (an ``Irreps``); ``str + Irreps`` works.
* Bad strings raise ``ValueError`` naming the offending term.
* ``D_from_*`` of an empty ``Irreps`` returns a ``(..., 0, 0)`` tensor; angles may be numbers.
* ``Irreps.is_scalar()`` is an addition (True iff every term is ``0e``).
"""

import collections
import operator
import re
from typing import Callable, Iterator, List, Optional, Union

import torch

from . import so3 as _so3

__all__ = ["Irrep", "Irreps", "as_irreps"]

_PARITY = {"e": 1, "o": -1}
_IRREP_RE = re.compile(r"^\s*(\d+)\s*([eoy])\s*$")
_TERM_RE = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\d+)\s*([eoy])\s*$")


def _to_int(x, what: str) -> int:
    """``x`` as a Python int (accepts numpy / torch integers, rejects bools and floats)."""
    if isinstance(x, bool):
        raise ValueError(f"{what} must be an integer, got {x!r}")
    try:
        return operator.index(x)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {x!r}") from None


def _parity_of(letter: str, l: int) -> int:
    return (-1) ** l if letter == "y" else _PARITY[letter]


def _is_irrep_like(x) -> bool:
    # e3nn's Irrep (and ours) expose .l and .p; a _MulIr exposes .mul and .ir instead.
    return isinstance(x, Irrep) or (
        not isinstance(x, (str, bytes)) and hasattr(x, "l") and hasattr(x, "p") and not hasattr(x, "mul")
    )


def _is_mulir_like(x) -> bool:
    return isinstance(x, _MulIr) or (not isinstance(x, (str, bytes)) and hasattr(x, "mul") and hasattr(x, "ir"))


class _ParsesStrings:
    """Equality that parses a string operand first (``Irrep("1o") == "1o"``); an
    unparsable string is simply unequal. Mixed into the tuple subclasses below."""

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = type(self)(other)
            except ValueError:
                return False
        return tuple.__eq__(self, other)

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq


class Irrep(_ParsesStrings, tuple):
    r"""Irreducible representation of O(3): degree ``l`` and parity ``p``.

    ``Irrep(1, -1)``, ``Irrep("1o")``, ``Irrep("2y")`` (= ``2e``), ``Irrep((1, -1))``,
    ``Irrep(other_irrep)`` and e3nn's ``Irrep`` are accepted.  The object is the tuple
    ``(l, p)``: ``l, p = ir`` works, it hashes and orders as ``(l, p)`` (so ``0o < 0e``).
    """

    __slots__ = ()

    def __new__(cls, l, p=None):
        if p is None:
            if isinstance(l, Irrep):
                return l
            if isinstance(l, str):
                m = _IRREP_RE.match(l)
                if m is None:
                    raise ValueError(
                        f'unable to convert string "{l}" into an Irrep: expected "<l><parity>" '
                        f'with l >= 0 and parity e, o or y, e.g. "1o"'
                    )
                l_int = int(m.group(1))
                return super().__new__(cls, (l_int, _parity_of(m.group(2), l_int)))
            if _is_irrep_like(l):
                l, p = l.l, l.p
            elif isinstance(l, (tuple, list)) and len(l) == 2:
                l, p = l
            elif not isinstance(l, (int, bool)) and hasattr(l, "__str__") and _IRREP_RE.match(str(l)):
                # Other libraries' irrep objects whose str() is e3nn syntax (e.g. "1o").
                return cls(str(l))
            else:
                raise ValueError(f"unable to interpret {l!r} as an Irrep (a parity is required)")
        l = _to_int(l, "l")
        if l < 0:
            raise ValueError(f"l must be a non-negative integer, got {l}")
        if isinstance(p, bool) or p not in (-1, 1):
            raise ValueError(f"parity must be one of (-1, 1), got {p!r}")
        return super().__new__(cls, (l, int(p)))

    def __getnewargs__(self):
        return (self[0], self[1])

    @property
    def l(self) -> int:  # noqa: E743
        """Degree ``l``."""
        return self[0]

    @property
    def p(self) -> int:
        """Parity, ``1`` (even) or ``-1`` (odd)."""
        return self[1]

    @property
    def dim(self) -> int:
        """Dimension ``2l + 1``."""
        return 2 * self[0] + 1

    def is_scalar(self) -> bool:
        """True for ``0e``."""
        return self[0] == 0 and self[1] == 1

    def __repr__(self) -> str:
        return f"{self[0]}{'e' if self[1] == 1 else 'o'}"

    __str__ = __repr__

    def __hash__(self):
        # Same value as hash((l, p)) (and e3nn's); written in Python so that torch.compile
        # can trace it (Dynamo refuses a C-level __hash__ on a tuple subclass).
        return hash((self[0], self[1]))

    @staticmethod
    def iterator(lmax: Optional[int] = None) -> Iterator["Irrep"]:
        """All irreps with ``l <= lmax`` (endless if ``lmax`` is None), in e3nn's order:
        for each ``l``, parity ``(-1)^l`` first: ``0e, 0o, 1o, 1e, 2e, 2o, ...``."""
        l = 0
        while lmax is None or l <= lmax:
            yield Irrep(l, (-1) ** l)
            yield Irrep(l, -((-1) ** l))
            l += 1

    def __mul__(self, other):
        """``Irrep * Irrep``: generator of the irreps in the product, ``l = |l1-l2|..l1+l2``
        with parity ``p1 p2``.  ``Irrep * int`` is ``int * Irrep``."""
        if isinstance(other, int) and not isinstance(other, bool):
            return self.__rmul__(other)
        other = Irrep(other)
        p = self.p * other.p
        lo, hi = abs(self.l - other.l), self.l + other.l
        return (Irrep(l, p) for l in range(lo, hi + 1))

    def __rmul__(self, mul):
        """``mul * Irrep`` is ``Irreps([(mul, Irrep)])``."""
        try:
            mul = _to_int(mul, "multiplicity")
        except ValueError:
            return NotImplemented
        return Irreps([(mul, self)])

    def __add__(self, other):
        return Irreps(self) + Irreps(other)

    def __radd__(self, other):
        return Irreps(other) + Irreps(self)

    def count(self, _value):
        # Same as e3nn: tuple.count on an Irrep is almost surely a mistake for Irreps.count.
        raise NotImplementedError

    def index(self, _value):
        raise NotImplementedError

    # ------------------------------------------------------------------ rotations
    def D_from_angles(self, alpha, beta, gamma, k=None) -> torch.Tensor:
        r"""Matrix of the group element ``R(alpha, beta, gamma) * inversion^k``.

        ``D = wigner_D(l, alpha, beta, gamma) * p^k``.  ``alpha, beta, gamma, k`` broadcast
        to a shape ``S`` (``k``: integer-valued, default 0); returns ``S + (2l+1, 2l+1)``.
        """
        alpha, beta, gamma = _so3._as_float_tensors(alpha, beta, gamma)
        if k is None:
            k = torch.zeros_like(alpha)
        k = torch.as_tensor(k, device=alpha.device)
        alpha, beta, gamma, k = torch.broadcast_tensors(alpha, beta, gamma, k)
        d = _so3.wigner_D(self.l, alpha, beta, gamma)
        if self.p == 1:
            return d
        # p^k for p = -1 and integer k.  Not written as (-1) ** k: torch.compile (2.13)
        # evaluates a negative Python base to a tensor power incorrectly.
        sign = 1 - 2 * torch.remainder(k.to(d.dtype), 2)
        return d * sign[..., None, None]

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        r"""Matrix of the orthogonal 3x3 matrix ``R`` (shape ``S + (3, 3)``): a reflection
        (``det R = -1``) acts as the rotation ``-R`` times ``p``.  Returns ``S + (2l+1, 2l+1)``."""
        return self.D_from_angles(*_matrix_to_angles_k(R))

    def D_from_quaternion(self, q, k=None) -> torch.Tensor:
        """Matrix of the rotation of the unit quaternion ``q = (w, x, y, z)`` (shape ``S + (4,)``)."""
        return self.D_from_angles(*_so3.matrix_to_angles(_so3.quaternion_to_matrix(q)), k)

    def D_from_axis_angle(self, axis, angle) -> torch.Tensor:
        """Matrix of the rotation by ``angle`` about ``axis`` (shape ``S + (3,)``)."""
        return self.D_from_angles(*_so3.matrix_to_angles(_so3.axis_angle_to_matrix(axis, angle)))


def _matrix_to_angles_k(R):
    """``(alpha, beta, gamma, k)`` of an orthogonal matrix: ``R = (-1)^k angles_to_matrix(...)``."""
    (R,) = _so3._as_float_tensors(R)
    d = torch.det(R).sign()
    k = (1 - d) / 2
    return (*_so3.matrix_to_angles(d[..., None, None] * R), k)


class _MulIr(tuple):
    """``mul`` copies of the irrep ``ir``: the tuple ``(mul, ir)``, printed ``"16x0e"``."""

    __slots__ = ()

    def __new__(cls, mul, ir=None):
        if ir is None:
            if isinstance(mul, _MulIr):
                return mul
            if _is_mulir_like(mul):
                mul, ir = mul.mul, mul.ir
            else:
                mul, ir = mul
        mul = _to_int(mul, "multiplicity")
        if mul < 0:
            raise ValueError(f"multiplicity must be >= 0, got {mul}")
        return super().__new__(cls, (mul, Irrep(ir)))

    def __getnewargs__(self):
        return (self[0], self[1])

    @property
    def mul(self) -> int:
        return self[0]

    @property
    def ir(self) -> Irrep:
        return self[1]

    @property
    def dim(self) -> int:
        """``mul * (2l + 1)``."""
        return self[0] * self[1].dim

    def __repr__(self) -> str:
        return f"{self[0]}x{self[1]}"

    __str__ = __repr__


_SortResult = collections.namedtuple("sort", ["irreps", "p", "inv"])


def _parse_term(term: str, whole: str) -> _MulIr:
    m = _TERM_RE.match(term)
    if m is None:
        raise ValueError(
            f'invalid term "{term.strip()}" in irreps "{whole}": expected "<mul>x<l><parity>" '
            f'or "<l><parity>" with parity e, o or y, e.g. "16x0e+8x1o"'
        )
    mul = 1 if m.group(1) is None else int(m.group(1))
    l = int(m.group(2))
    return _MulIr(mul, Irrep(l, _parity_of(m.group(3), l)))


def _parse_irreps(s: str) -> List[_MulIr]:
    if s.strip() == "":
        return []
    return [_parse_term(term, s) for term in s.split("+")]


def _to_mulir(x) -> _MulIr:
    if isinstance(x, _MulIr):
        return x
    if isinstance(x, str):
        return _parse_term(x, x)
    if _is_mulir_like(x):
        return _MulIr(x.mul, x.ir)
    if _is_irrep_like(x):
        return _MulIr(1, Irrep(x))
    if isinstance(x, (tuple, list)) and len(x) == 2:
        return _MulIr(x[0], x[1])
    raise ValueError(f'unable to interpret {x!r} as a term "(mul, irrep)" of an Irreps')


class _SliceByMul:
    def __init__(self, irreps: "Irreps"):
        self.irreps = irreps

    def __getitem__(self, s) -> "Irreps":
        if not isinstance(s, slice):
            raise IndexError("Irreps.slice_by_mul only supports slices.")
        if s.step is not None:
            raise NotImplementedError("Irreps.slice_by_mul does not support strides.")
        start, stop, _ = s.indices(self.irreps.num_irreps)
        out = []
        i = 0
        for mul, ir in self.irreps:
            # e3nn's rule: a term inside [start, stop] is kept whole (0x terms included);
            # a term that overlaps the range is cut to the overlap.
            if start <= i and i + mul <= stop:
                out.append((mul, ir))
            elif start < i + mul and i < stop:
                out.append((min(stop, i + mul) - max(start, i), ir))
            i += mul
        return Irreps(out)


class Irreps(_ParsesStrings, tuple):
    r"""Direct sum of irreps: a tuple of ``_MulIr(mul, ir)``.

    Accepts a string ``"16x0e + 8x1o + 1e"`` (no ``x`` means multiplicity 1; ``0x`` terms are
    kept; ``""`` is empty), an ``Irrep``, another ``Irreps`` (ours or e3nn's), ``None``, or an
    iterable of terms, each a ``(mul, irrep)`` pair, an irrep, a ``_MulIr`` or a string.
    """

    __slots__ = ()

    def __new__(cls, irreps=None):
        if type(irreps) is cls:
            return irreps
        if irreps is None:
            terms = []
        elif isinstance(irreps, str):
            terms = _parse_irreps(irreps)
        elif _is_irrep_like(irreps):
            terms = [_MulIr(1, Irrep(irreps))]
        elif _is_mulir_like(irreps):
            terms = [_MulIr(irreps)]
        else:
            try:
                it = iter(irreps)
            except TypeError:
                raise TypeError(f"unable to convert {irreps!r} into an Irreps") from None
            terms = [_to_mulir(x) for x in it]
        return super().__new__(cls, terms)

    def __getnewargs__(self):
        return (tuple(self),)

    # ------------------------------------------------------------------ printing, equality
    def __repr__(self) -> str:
        return "+".join(repr(mul_ir) for mul_ir in self)

    __str__ = __repr__

    def __hash__(self):
        # Equal to the hash of the nested plain tuples (and of e3nn's Irreps); Python-level
        # so that torch.compile can trace it.
        return hash(tuple((mul, (ir[0], ir[1])) for mul, ir in self))

    # ------------------------------------------------------------------ sequence protocol
    def __getitem__(self, i):
        x = tuple.__getitem__(self, i)
        if isinstance(i, slice):
            return Irreps(x)
        return x

    def __contains__(self, ir) -> bool:
        ir = Irrep(ir)
        return ir in (mul_ir.ir for mul_ir in self)

    def count(self, ir) -> int:
        """Total multiplicity of the irrep ``ir``."""
        ir = Irrep(ir)
        return sum(mul for mul, irr in self if irr == ir)

    def index(self, _object):
        # Same as e3nn: ambiguous between irreps and terms, not implemented.
        raise NotImplementedError

    def __add__(self, other):
        try:
            other = Irreps(other)
        except TypeError:
            return NotImplemented
        return Irreps(tuple.__add__(self, other))

    def __radd__(self, other):
        try:
            other = Irreps(other)
        except TypeError:
            return NotImplemented
        return Irreps(tuple.__add__(other, self))

    def __mul__(self, other):
        """``Irreps * n``: the irreps repeated ``n`` times (like a tuple)."""
        if isinstance(other, (Irreps, Irrep, str)) or _is_irrep_like(other):
            raise NotImplementedError(
                "Irreps * Irreps is ambiguous; use a tensor product (e3nn: o3.TensorProduct)"
            )
        if isinstance(other, bool) or not hasattr(other, "__index__"):
            return NotImplemented
        return Irreps(tuple.__mul__(self, operator.index(other)))

    __rmul__ = __mul__

    # ------------------------------------------------------------------ sizes
    @property
    def dim(self) -> int:
        """Sum of ``mul * (2l + 1)``."""
        return sum(mul_ir.dim for mul_ir in self)

    @property
    def num_irreps(self) -> int:
        """Sum of the multiplicities."""
        return sum(mul for mul, _ in self)

    @property
    def ls(self) -> List[int]:
        """``l`` of every irrep copy (each repeated ``mul`` times)."""
        return [ir.l for mul, ir in self for _ in range(mul)]

    @property
    def lmax(self) -> int:
        """Largest ``l`` among the irreps with non-zero multiplicity."""
        ls = self.ls
        if len(ls) == 0:
            raise ValueError("Cannot get lmax of empty Irreps")
        return max(ls)

    def slices(self) -> List[slice]:
        """``slice`` of every term in the flat "mul_ir" layout."""
        out = []
        i = 0
        for mul_ir in self:
            out.append(slice(i, i + mul_ir.dim))
            i += mul_ir.dim
        return out

    @property
    def slice_by_mul(self) -> _SliceByMul:
        """``irreps.slice_by_mul[a:b]``: the irreps copies ``a..b-1`` counted one by one
        (``0x`` terms at the boundaries follow e3nn's rule)."""
        return _SliceByMul(self)

    def is_scalar(self) -> bool:
        """True iff every term is ``0e`` (vacuously true when empty).  Not in e3nn."""
        return all(ir.is_scalar() for _, ir in self)

    # ------------------------------------------------------------------ rearrangements
    def sort(self):
        r"""Stable sort of the terms by irrep.

        Returns the namedtuple ``sort(irreps, p, inv)``, as e3nn: ``inv[j]`` is the original
        index of sorted term ``j`` and ``p[i]`` the sorted position of original term ``i``.
        """
        inv = tuple(sorted(range(len(self)), key=lambda i: self[i].ir))
        p = [0] * len(inv)
        for j, i in enumerate(inv):
            p[i] = j
        return _SortResult(Irreps([self[i] for i in inv]), tuple(p), inv)

    def remove_zero_multiplicities(self) -> "Irreps":
        """Drop the ``0x`` terms."""
        return Irreps([mul_ir for mul_ir in self if mul_ir.mul > 0])

    def simplify(self) -> "Irreps":
        """Drop the ``0x`` terms and merge *adjacent* equal irreps: ``1e+1e+0e+0x0e+1e -> 2x1e+1x0e+1x1e``."""
        out = []
        for mul, ir in self:
            if mul == 0:
                continue
            if out and out[-1][1] == ir:
                out[-1] = (out[-1][0] + mul, ir)
            else:
                out.append((mul, ir))
        return Irreps(out)

    def regroup(self) -> "Irreps":
        """``sort().irreps.simplify()``."""
        return self.sort().irreps.simplify()

    def filter(
        self,
        keep: Union["Irreps", str, List[Irrep], Callable[[_MulIr], bool], None] = None,
        *,
        drop: Union["Irreps", str, List[Irrep], Callable[[_MulIr], bool], None] = None,
        lmax: Optional[int] = None,
    ) -> "Irreps":
        """Keep the terms whose irrep is in ``keep`` (or for which ``keep(mul_ir)`` is true),
        or drop those in ``drop``, or those with ``l > lmax``.  Only one criterion at a time.
        """
        if keep is not None and drop is not None:
            raise ValueError("Cannot specify both keep and drop")
        if keep is not None and lmax is not None:
            raise ValueError("Cannot specify both keep and lmax")
        if drop is not None and lmax is not None:
            raise ValueError("Cannot specify both drop and lmax")
        if keep is None and drop is None and lmax is None:
            return self

        def as_predicate(sel):
            if callable(sel) and not isinstance(sel, (Irreps, Irrep, str)):
                return sel
            if isinstance(sel, (str, Irreps)) or _is_irrep_like(sel):
                irs = {ir for _, ir in Irreps(sel)}
            else:
                irs = {Irrep(x) for x in sel}
            return lambda mul_ir: mul_ir.ir in irs

        if keep is not None:
            pred = as_predicate(keep)
            return Irreps([mul_ir for mul_ir in self if pred(mul_ir)])
        if drop is not None:
            pred = as_predicate(drop)
            return Irreps([mul_ir for mul_ir in self if not pred(mul_ir)])
        return Irreps([mul_ir for mul_ir in self if mul_ir.ir.l <= lmax])

    @staticmethod
    def spherical_harmonics(lmax: int, p: int = -1) -> "Irreps":
        """``1x0e+1x1o+1x2e+...`` up to ``lmax`` (parity ``p^l``; ``p=1`` gives all even)."""
        return Irreps([(1, (l, p**l)) for l in range(lmax + 1)])

    # ------------------------------------------------------------------ random data
    def randn(
        self, *size: int, normalization: str = "component", requires_grad: bool = False, dtype=None, device=None
    ) -> torch.Tensor:
        r"""Random tensor of shape ``size`` with the single ``-1`` replaced by ``dim``.

        ``normalization='component'``: i.i.d. standard normal entries; ``'norm'``: each irrep
        copy has unit norm.  Consumes torch's RNG exactly like e3nn (same seed, same tensor).
        """
        if sum(1 for s in size if s == -1) != 1:
            raise ValueError(f"size must contain exactly one -1 (the irreps dimension), got {size}")
        di = size.index(-1)
        lsize, rsize = size[:di], size[di + 1 :]
        if normalization == "component":
            return torch.randn(*lsize, self.dim, *rsize, requires_grad=requires_grad, dtype=dtype, device=device)
        if normalization == "norm":
            x = torch.zeros(*lsize, self.dim, *rsize, dtype=dtype, device=device)
            with torch.no_grad():
                for s, (mul, ir) in zip(self.slices(), self):
                    r = torch.randn(*lsize, mul, ir.dim, *rsize, dtype=dtype, device=device)
                    r.div_(r.norm(2, dim=di + 1, keepdim=True))
                    x.narrow(di, s.start, s.stop - s.start).copy_(r.reshape(*lsize, -1, *rsize))
            return x.requires_grad_(requires_grad)
        raise ValueError(f"normalization must be 'component' or 'norm', got {normalization!r}")

    # ------------------------------------------------------------------ rotations
    def D_from_angles(self, alpha, beta, gamma, k=None) -> torch.Tensor:
        r"""Block-diagonal matrix of ``R(alpha, beta, gamma) * inversion^k`` in the "mul_ir"
        layout: shape ``S + (dim, dim)`` with ``S`` the broadcast shape of the angles and ``k``."""
        alpha, beta, gamma = _so3._as_float_tensors(alpha, beta, gamma)
        if k is None:
            k = torch.zeros_like(alpha)
        k = torch.as_tensor(k, device=alpha.device)
        alpha, beta, gamma, k = torch.broadcast_tensors(alpha, beta, gamma, k)
        out = alpha.new_zeros(alpha.shape + (self.dim, self.dim))
        cache = {}  # one D per distinct irrep, keyed by (l, p)
        i = 0
        for mul, ir in self:
            key = (ir.l, ir.p)
            if mul > 0 and key not in cache:
                cache[key] = ir.D_from_angles(alpha, beta, gamma, k)
            for _ in range(mul):
                out[..., i : i + ir.dim, i : i + ir.dim] = cache[key]
                i += ir.dim
        return out

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        r"""Block-diagonal matrix of the orthogonal matrix ``R`` (shape ``S + (3, 3)``; a
        reflection acts as ``-R`` times the parity).  Returns ``S + (dim, dim)``."""
        return self.D_from_angles(*_matrix_to_angles_k(R))

    def D_from_quaternion(self, q, k=None) -> torch.Tensor:
        """Block-diagonal matrix of the rotation of the unit quaternion ``q = (w, x, y, z)``."""
        return self.D_from_angles(*_so3.matrix_to_angles(_so3.quaternion_to_matrix(q)), k)

    def D_from_axis_angle(self, axis, angle) -> torch.Tensor:
        """Block-diagonal matrix of the rotation by ``angle`` about ``axis``."""
        return self.D_from_angles(*_so3.matrix_to_angles(_so3.axis_angle_to_matrix(axis, angle)))


def as_irreps(x) -> Irreps:
    """``Irreps(x)`` for a string, ``Irreps``, ``Irrep``, e3nn object or list of terms."""
    return Irreps(x)
