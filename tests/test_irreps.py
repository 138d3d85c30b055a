"""equiops.irreps against e3nn.o3.Irrep / Irreps: parsing, printing, sizes, rearrangements,
arithmetic, equality and interoperability, random data and representation matrices."""

from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch

from equiops import so3
from equiops.irreps import Irrep, Irreps, as_irreps

e3nn = pytest.importorskip("e3nn")
from e3nn import o3  # noqa: E402


# e3nn builds its generators in the default dtype: float64 makes it a 1e-14 reference.
pytestmark = pytest.mark.usefixtures("float64_default")

from conftest import random_o3  # noqa: E402


IRREPS_CASES = [
    "",
    "0e",
    "1o",
    "16x0e+8x1o",
    "16x0e+8x1o+4x2e",
    "  3x0e + 2 x 1o+ 1e ",
    "1e+0e+1o+0e+2x1e",
    "0x0e",
    "0x1e+1e",
    "1e+0x0e+1e",
    "1e+1e+0e+1e+0x1e+1e",
    "2x1e+1e+1x1e+0x1e",
    "1y+2y+3y+0y",
    "0o+0e+3x0o+2x0e",
    "5x8e+3x7o+2x3y+0x4o+12x0e",
    "2x0o+2x0e+1x1o+1x1e+0x2e+3x2o",
]

IRREP_STRINGS = ["0e", "0o", "1o", "1e", "2e", "3o", "5y", "4y", "8o", " 2 e", "10e", "12o"]


# ---------------------------------------------------------------------------------------
# Irrep
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("s", IRREP_STRINGS)
def test_irrep_parse_print(s):
    ours, ref = Irrep(s), o3.Irrep(s)
    assert (ours.l, ours.p, ours.dim) == (ref.l, ref.p, ref.dim)
    assert repr(ours) == repr(ref) and str(ours) == str(ref)
    assert ours.is_scalar() == ref.is_scalar()
    assert ours == ref and ref == ours and ours == s and hash(ours) == hash(ref)
    l, p = ours
    assert (l, p) == (ref.l, ref.p)
    assert Irrep(ours) is ours
    assert Irrep(ref) == ours
    assert Irrep(ours.l, ours.p) == ours
    assert Irrep((ours.l, ours.p)) == ours


def test_irrep_parity_letters():
    assert Irrep("3y") == Irrep(3, -1) and Irrep("4y") == Irrep(4, 1)
    assert Irrep("1e").p == 1 and Irrep("1o").p == -1


def test_irrep_order_and_iterator():
    irs = [Irrep(s) for s in ["2e", "0e", "1e", "0o", "1o", "2o"]]
    refs = [o3.Irrep(s) for s in ["2e", "0e", "1e", "0o", "1o", "2o"]]
    assert [str(x) for x in sorted(irs)] == [str(x) for x in sorted(refs)]
    assert str(sorted(irs)[0]) == "0o"  # 0o before 0e
    assert Irrep("0o") < Irrep("0e") < Irrep("1o") < Irrep("1e")
    assert list(Irrep.iterator(4)) == list(o3.Irrep.iterator(4))
    ours, ref = Irrep.iterator(), o3.Irrep.iterator()  # endless without lmax
    assert [next(ours) for _ in range(9)] == [next(ref) for _ in range(9)]


@pytest.mark.parametrize("a,b", [("0e", "1o"), ("1o", "1o"), ("2e", "1o"), ("3o", "5y"), ("2e", "2o")])
def test_irrep_product_and_sum(a, b):
    ours = Irrep(a) * Irrep(b)
    assert iter(ours) is ours  # a generator, like e3nn
    assert list(ours) == list(o3.Irrep(a) * o3.Irrep(b))
    assert list(Irrep(a) * b) == list(o3.Irrep(a) * b)
    assert 3 * Irrep(a) == 3 * o3.Irrep(a) and isinstance(3 * Irrep(a), Irreps)
    assert Irrep(a) * 3 == Irreps([(3, a)])
    assert Irrep(a) + Irrep(b) == o3.Irrep(a) + o3.Irrep(b)
    assert isinstance(Irrep(a) + Irrep(b), Irreps)


def test_irrep_count_index_like_e3nn():
    with pytest.raises(NotImplementedError):
        Irrep("1o").count(1)
    with pytest.raises(NotImplementedError):
        Irrep("1o").index(1)


@pytest.mark.parametrize(
    "args",
    [("1z",), ("1x",), ("",), ("-1e",), ("a",), ("1E",), (-1, 1), (1, 0), (1, 2), (1.0, 1), (1,), (None,), ("1.5e",)],
)
def test_irrep_bad(args):
    with pytest.raises(ValueError):
        Irrep(*args)


def test_irrep_bad_string_message():
    with pytest.raises(ValueError, match=re.escape('"1z"')):
        Irrep("1z")


# ---------------------------------------------------------------------------------------
# Irreps: parsing and properties vs e3nn
# ---------------------------------------------------------------------------------------

def _terms(irreps):
    return [(mul, ir.l, ir.p) for mul, ir in irreps]


@pytest.mark.parametrize("s", IRREPS_CASES)
def test_irreps_table(s):
    ours, ref = Irreps(s), o3.Irreps(s)
    assert repr(ours) == repr(ref) and str(ours) == str(ref)
    assert len(ours) == len(ref)
    assert _terms(ours) == _terms(ref)
    assert ours.dim == ref.dim
    assert ours.num_irreps == ref.num_irreps
    assert ours.ls == ref.ls
    if ref.ls:
        assert ours.lmax == ref.lmax
    else:
        with pytest.raises(ValueError):
            ours.lmax
    assert ours.slices() == ref.slices()
    srt, srt_ref = ours.sort(), ref.sort()
    assert type(srt).__name__ == "sort" and srt._fields == ("irreps", "p", "inv")
    assert repr(srt) == repr(srt_ref)
    assert srt.p == srt_ref.p and srt.inv == srt_ref.inv and srt.irreps == srt_ref.irreps
    assert isinstance(srt.irreps, Irreps)
    assert repr(ours.simplify()) == repr(ref.simplify())
    assert repr(ours.regroup()) == repr(ref.regroup())
    assert repr(ours.remove_zero_multiplicities()) == repr(ref.remove_zero_multiplicities())
    for mul_ir, mul_ir_ref in zip(ours, ref):
        assert (mul_ir.mul, mul_ir.ir, mul_ir.dim) == (mul_ir_ref.mul, mul_ir_ref.ir, mul_ir_ref.dim)
        assert repr(mul_ir) == repr(mul_ir_ref)
        mul, ir = mul_ir
        assert isinstance(ir, Irrep) and isinstance(mul, int)
    for ir in ["0e", "0o", "1e", "1o", "2e", "3o"]:
        assert ours.count(ir) == ref.count(ir)
        assert (ir in ours) == (ir in ref)
    # equality and hashing, both directions, with e3nn objects and strings
    assert ours == ref and ref == ours and not (ours != ref)
    assert hash(ours) == hash(ref)
    assert ours == s and ours == repr(ref) and not (ours != s)
    assert as_irreps(s) == ours and as_irreps(ref) == ours and Irreps(ref) == ours
    assert Irreps(ours) is ours


def test_irreps_empty():
    assert Irreps("") == Irreps() == Irreps(None) == Irreps([]) == Irreps("  ") == ()
    assert len(Irreps("")) == 0 and Irreps("").dim == 0 and repr(Irreps("")) == ""
    assert Irreps("") == ""


def test_irreps_constructors():
    x = Irreps([(16, (0, 1)), (8, "1o"), "2e", Irrep("3o"), (2, Irrep("1e")), "3x2o", o3.Irrep("0o"), (1, o3.Irrep("4e"))])
    assert repr(x) == "16x0e+8x1o+1x2e+1x3o+2x1e+3x2o+1x0o+1x4e"
    assert Irreps(Irrep("1o")) == "1x1o" and Irreps(o3.Irrep("1o")) == "1o"
    assert Irreps(o3.Irreps("2x1o+0x0e")) == "2x1o+0x0e"
    assert Irreps(list(o3.Irreps("2x1o+3e"))) == "2x1o+3e"
    assert Irreps(x[0]) == "16x0e"
    assert Irreps("1o") == Irreps("1x1o") == Irreps(" 1 x 1o ")
    assert Irreps(Irrep("1o") * Irrep("1o")) == "0e+1e+2e"
    # multiplicities are Python ints even from numpy-like integer types
    assert type(Irreps([(torch.tensor(2).item(), "1o")])[0].mul) is int


def test_irreps_keeps_zero_multiplicity():
    x = Irreps("0x0e+2x1o+0x2e")
    assert len(x) == 3 and x.dim == 6 and x.slices()[0] == slice(0, 0)
    assert x.simplify() == "2x1o"


BAD_IRREPS = [
    ("1e+", ""),
    ("+1e", ""),
    ("1e++0e", ""),
    ("-1x1e", "-1x1e"),
    ("1.5x1e", "1.5x1e"),
    ("1x1x1e", "1x1x1e"),
    ("x1e", "x1e"),
    ("1X1e", "1X1e"),
    ("0e+1z", "1z"),
    ("0e+1x1z+2e", "1x1z"),
    ("16x0e+8x1q", "8x1q"),
    ("3x", "3x"),
]


@pytest.mark.parametrize("s,term", BAD_IRREPS)
def test_irreps_bad_string(s, term):
    with pytest.raises(ValueError, match=re.escape(f'"{term}"')):
        Irreps(s)
    with pytest.raises(ValueError):
        o3.Irreps(s)  # e3nn rejects them too


@pytest.mark.parametrize("bad", [[(1, 2, 3)], [(-1, "1e")], [((1, 1), 2)], [(1.5, "1e")]])
def test_irreps_bad_terms(bad):
    with pytest.raises(ValueError):
        Irreps(bad)


def test_irreps_bad_type():
    with pytest.raises(TypeError):
        Irreps(5)


def test_irreps_equality_edge_cases():
    x = Irreps("2x1o+0e")
    assert x != "2x1o"
    assert x != "1z"  # unparsable: unequal, not an error
    assert x != 5 and x != [(2, (1, -1)), (1, (0, 1))]  # lists are not tuples (as e3nn)
    assert x == ((2, (1, -1)), (1, (0, 1)))
    assert {x: 1}[o3.Irreps("2x1o+0e")] == 1


# ---------------------------------------------------------------------------------------
# Arithmetic and slicing
# ---------------------------------------------------------------------------------------

def test_irreps_arithmetic():
    a, b = "16x0e+8x1o", "2e+0x1o"
    assert Irreps(a) + Irreps(b) == o3.Irreps(a) + o3.Irreps(b)
    assert isinstance(Irreps(a) + b, Irreps)
    assert Irreps(a) + b == o3.Irreps(a) + b
    assert a + Irreps(b) == o3.Irreps(a) + o3.Irreps(b)  # extension: str + Irreps
    assert Irreps(a) + Irrep("1e") == o3.Irreps(a) + o3.Irrep("1e")
    assert Irreps(a) + o3.Irreps(b) == o3.Irreps(a) + o3.Irreps(b)
    for n in [0, 1, 3]:
        assert Irreps(a) * n == o3.Irreps(a) * n
        assert n * Irreps(a) == n * o3.Irreps(a)
        assert isinstance(n * Irreps(a), Irreps)
    with pytest.raises(NotImplementedError):
        Irreps(a) * Irreps(b)
    with pytest.raises(TypeError):
        Irreps(a) * 2.0
    with pytest.raises(TypeError):
        Irreps(a) + 3


def test_irreps_slicing_iteration():
    s = "0x0o+16x0e+8x1o+0x2e+1e+3x3o+0x4e"
    ours, ref = Irreps(s), o3.Irreps(s)
    for sl in [slice(1, None), slice(None, 2), slice(1, 3), slice(None, None, -1), slice(-2, None), slice(5, 9)]:
        assert isinstance(ours[sl], Irreps)
        assert ours[sl] == ref[sl] and repr(ours[sl]) == repr(ref[sl])
    for i in range(-len(ref), len(ref)):
        assert ours[i] == ref[i] and repr(ours[i]) == repr(ref[i])
    assert [tuple(x) for x in ours] == [tuple(x) for x in ref]
    with pytest.raises(IndexError):
        ours[len(ref)]
    bounds = [(0, 5), (3, 20), (16, 17), (0, 28), (5, 5), (-3, None), (None, 2), (0, 0), (24, 24), (23, 24)]
    bounds += [(24, 25), (25, 25), (28, 28), (16, 24), (29, 40), (24, 26), (0, 16), (None, None)]
    for a, b in bounds:
        assert ours.slice_by_mul[a:b] == ref.slice_by_mul[a:b]
    with pytest.raises(IndexError):
        ours.slice_by_mul[3]


def test_irreps_index_like_e3nn():
    with pytest.raises(NotImplementedError):
        Irreps("1e+0e").index("1e")


def test_irreps_contains_count():
    x = Irreps("2x1e+0x0e+3x1e+2o")
    assert "1e" in x and Irrep("0e") in x and o3.Irrep("2o") in x and "1o" not in x
    assert x.count("1e") == 5 and x.count(Irrep("0e")) == 0 and x.count("3o") == 0


def test_irreps_filter():
    s = "2x1e+0e+3x2o+0x1o+1e"
    ours, ref = Irreps(s), o3.Irreps(s)
    for kw in [
        dict(keep=["1e", Irrep("0e")]),
        dict(keep=[(1, 1)]),
        dict(drop=["2o"]),
        dict(lmax=1),
        dict(lmax=0),
        dict(keep=lambda m: m.mul > 1),
        dict(drop=lambda m: m.mul > 1),
        dict(),
        dict(keep=[]),
        dict(drop=[]),
    ]:
        assert ours.filter(**kw) == ref.filter(**kw), kw
    assert ours.filter(keep=Irrep("1e")) == ref.filter(keep=o3.Irrep("1e"))
    assert ours.filter(keep=o3.Irrep("1e")) == ref.filter(keep=o3.Irrep("1e"))
    # Strings and Irreps select irreps (e3nn 0.6 returns "" / everything here).
    assert ours.filter(keep="1e+0e") == "2x1e+0e+1e"
    assert ours.filter(keep=Irreps("5x1e")) == "2x1e+1e"
    assert ours.filter(drop="1e") == "0e+3x2o+0x1o"
    for kw in [dict(keep="0e", drop="1e"), dict(keep="0e", lmax=1), dict(drop="0e", lmax=1)]:
        with pytest.raises(ValueError):
            ours.filter(**kw)


def test_irreps_is_scalar():
    assert Irreps("3x0e+0e").is_scalar() and Irreps("").is_scalar()
    assert not Irreps("0e+0o").is_scalar() and not Irreps("1e").is_scalar()


@pytest.mark.parametrize("lmax", range(6))
@pytest.mark.parametrize("p", [-1, 1])
def test_spherical_harmonics_irreps(lmax, p):
    ours = Irreps.spherical_harmonics(lmax, p)
    assert ours == o3.Irreps.spherical_harmonics(lmax, p)
    assert repr(ours) == repr(o3.Irreps.spherical_harmonics(lmax, p))
    assert Irreps.spherical_harmonics(lmax) == o3.Irreps.spherical_harmonics(lmax)
    assert ours.dim == (lmax + 1) ** 2


def test_pickle_copy_hash():
    x = Irreps("16x0e+8x1o+0x2e")
    for y in [pickle.loads(pickle.dumps(x)), copy.deepcopy(x), copy.copy(x)]:
        assert y == x and type(y) is Irreps and type(y[0]) is type(x[0]) and type(y[0].ir) is Irrep
    ir = Irrep("3o")
    assert pickle.loads(pickle.dumps(ir)) == ir and type(pickle.loads(pickle.dumps(ir))) is Irrep
    assert len({Irreps("1e+0e"), Irreps("1x1e+1x0e"), o3.Irreps("1e+0e")}) == 1


# ---------------------------------------------------------------------------------------
# Random data
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "size,kw",
    [((2, -1), {}), ((-1,), {}), ((-1, 3), {}), ((2, -1, 3), dict(normalization="norm")), ((4, -1), dict(normalization="norm"))],
)
def test_randn_matches_e3nn(size, kw):
    s = "2x1o+3x0e+2e+0x1e"
    torch.manual_seed(0)
    ours = Irreps(s).randn(*size, **kw)
    torch.manual_seed(0)
    ref = o3.Irreps(s).randn(*size, **kw)
    assert ours.shape == ref.shape and torch.equal(ours, ref)


def test_randn_options():
    x = Irreps("3x1o+2e").randn(5, -1, normalization="norm", dtype=torch.float32, requires_grad=True)
    assert x.dtype == torch.float32 and x.requires_grad and x.is_leaf
    norms = x[:, :9].reshape(5, 3, 3).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    with pytest.raises(ValueError):
        Irreps("1o").randn(3)
    with pytest.raises(ValueError):
        Irreps("1o").randn(-1, -1)
    with pytest.raises(ValueError):
        Irreps("1o").randn(-1, normalization="integral")


# ---------------------------------------------------------------------------------------
# Representation matrices
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("l", range(9))
def test_irrep_D_from_matrix_vs_e3nn(l):
    R = random_o3(6, seed=l)
    for p in (1, -1):
        ours = Irrep(l, p).D_from_matrix(R)
        ref = o3.Irrep(l, p).D_from_matrix(R)
        assert ours.shape == (6, 2 * l + 1, 2 * l + 1)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)


def test_irreps_D_from_matrix_vs_e3nn():
    R = random_o3(6, seed=42)
    for s in ["16x0e+2x1o+0x1e+2e+0o", "3o+4e+5y+6y+7o+8e", "1e"]:
        ours = Irreps(s).D_from_matrix(R)
        ref = o3.Irreps(s).D_from_matrix(R)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)
    assert Irreps("").D_from_matrix(R).shape == (6, 0, 0)


def test_D_from_angles_vs_e3nn():
    a, b, c = so3.rand_angles(7, dtype=torch.float64)
    k = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    for s in ["2x1o+3e+0e+0o", "5y+6o"]:
        torch.testing.assert_close(
            Irreps(s).D_from_angles(a, b, c, k), o3.Irreps(s).D_from_angles(a, b, c, k), rtol=0, atol=1e-10
        )
        torch.testing.assert_close(Irreps(s).D_from_angles(a, b, c), o3.Irreps(s).D_from_angles(a, b, c), rtol=0, atol=1e-10)
    # broadcasting between the angles and k
    assert Irrep("2o").D_from_angles(a[:, None], b[:3], 0.1, k=torch.tensor(1)).shape == (7, 3, 5, 5)
    assert Irrep("2o").D_from_angles(0.1, 0.2, 0.3, k=1).shape == (5, 5)


def test_D_from_quaternion_axis_angle_vs_e3nn():
    q = torch.nn.functional.normalize(torch.randn(4, 4, dtype=torch.float64), dim=-1)
    axis, angle = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    s = "2x1o+3e"
    torch.testing.assert_close(Irreps(s).D_from_quaternion(q), o3.Irreps(s).D_from_quaternion(q), rtol=0, atol=1e-10)
    torch.testing.assert_close(
        Irreps(s).D_from_axis_angle(axis, angle), o3.Irreps(s).D_from_axis_angle(axis, angle), rtol=0, atol=1e-10
    )


def test_D_is_a_representation_of_O3():
    R1, R2 = random_o3(4, seed=1), random_o3(4, seed=2)
    irreps = Irreps("0o+1e+2x2o+3y")
    D = irreps.D_from_matrix
    torch.testing.assert_close(D(R1 @ R2), D(R1) @ D(R2), rtol=0, atol=1e-12)
    eye = torch.eye(irreps.dim, dtype=torch.float64)
    torch.testing.assert_close(D(R1) @ D(R1).transpose(-1, -2), eye.expand(4, -1, -1), rtol=0, atol=1e-12)
    # l = 1 odd is the Cartesian matrix itself, reflections included
    torch.testing.assert_close(Irrep("1o").D_from_matrix(R1), R1, rtol=0, atol=1e-12)
    # the inversion acts as p
    torch.testing.assert_close(
        Irrep("2o").D_from_matrix(-torch.eye(3, dtype=torch.float64)), -torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-12
    )


def test_D_dtype_follows_input():
    R = so3.rand_matrix(3, dtype=torch.float32)
    assert Irreps("1o+2e").D_from_matrix(R).dtype == torch.float32
    assert Irrep("3o").D_from_angles(torch.zeros(2, dtype=torch.float32), 0.0, 0.0).dtype == torch.float32


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_irreps_usable_under_torch_compile():
    # Kernels loop over Irreps (and may key dicts by Irrep) inside compiled code.
    irreps = Irreps("2x0e+3x1o+2e")

    def f(x, a):
        mul_of = {}
        outs = []
        for s, (mul, ir) in zip(irreps.slices(), irreps):
            mul_of[ir] = mul
            outs.append(x[..., s].reshape(*x.shape[:-1], mul, ir.dim).norm(dim=-1) * mul_of[ir])
        rotated = x @ irreps.D_from_angles(a, a, a).transpose(-1, -2)
        return torch.cat(outs, -1), rotated

    torch._dynamo.reset()
    compiled = torch.compile(f, backend="eager", fullgraph=True)
    x, a = irreps.randn(4, -1), torch.rand(4)
    for got, want in zip(compiled(x, a), f(x, a)):
        torch.testing.assert_close(got, want)
    # parity under compile (torch 2.13 gets (-1) ** tensor wrong there)
    R = random_o3(4)
    torch.testing.assert_close(
        torch.compile(Irreps("1o+2o+1e").D_from_matrix, backend="eager", fullgraph=True)(R),
        Irreps("1o+2o+1e").D_from_matrix(R),
    )
