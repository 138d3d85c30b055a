"""equiops.so3 against e3nn.o3: Clebsch-Gordan coefficients (wigner_3j), Wigner D matrices,
generators, change of basis, and the rotation / Euler-angle helpers."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch

from equiops import so3

e3nn = pytest.importorskip("e3nn")
from e3nn import o3  # noqa: E402


# e3nn builds its generators in the default dtype: float64 makes it a 1e-14 reference.
pytestmark = pytest.mark.usefixtures("float64_default")


F64 = torch.float64


def triples(lmax):
    return [
        (l1, l2, l3)
        for l1, l2, l3 in itertools.product(range(lmax + 1), repeat=3)
        if abs(l1 - l2) <= l3 <= l1 + l2
    ]


# ---------------------------------------------------------------------------------------
# wigner_3j
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("l1", range(9))
def test_wigner_3j_vs_e3nn_all_triples_lmax8(l1):
    for _, l2, l3 in [t for t in triples(8) if t[0] == l1]:
        ours = so3.wigner_3j(l1, l2, l3, dtype=F64)
        ref = o3.wigner_3j(l1, l2, l3, dtype=F64)
        assert ours.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12, msg=f"wigner_3j({l1}, {l2}, {l3})")
        # structural zeros are exact zeros (kernels may read the sparsity pattern)
        assert torch.equal(ours == 0, ref.abs() < 1e-12), (l1, l2, l3)


@pytest.mark.parametrize("triple", [(12, 12, 12), (10, 7, 15), (13, 0, 13), (3, 14, 12)])
def test_wigner_3j_vs_e3nn_beyond_8(triple):
    torch.testing.assert_close(so3.wigner_3j(*triple, dtype=F64), o3.wigner_3j(*triple, dtype=F64), rtol=0, atol=1e-12)


def test_wigner_3j_norm_and_known_values():
    for t in triples(6):
        assert abs(so3.wigner_3j(*t, dtype=F64).norm().item() - 1) < 1e-14, t
    for l in range(9):
        eye = torch.eye(2 * l + 1, dtype=F64) / math.sqrt(2 * l + 1)
        torch.testing.assert_close(so3.wigner_3j(0, l, l, dtype=F64)[0], eye, rtol=0, atol=1e-15)
        torch.testing.assert_close(so3.wigner_3j(l, 0, l, dtype=F64)[:, 0], eye, rtol=0, atol=1e-15)
        torch.testing.assert_close(so3.wigner_3j(l, l, 0, dtype=F64)[:, :, 0], eye, rtol=0, atol=1e-15)
    eps = torch.zeros(3, 3, 3, dtype=F64)
    for (i, j, k), s in [((0, 1, 2), 1), ((1, 2, 0), 1), ((2, 0, 1), 1), ((0, 2, 1), -1), ((2, 1, 0), -1), ((1, 0, 2), -1)]:
        eps[i, j, k] = s
    torch.testing.assert_close(so3.wigner_3j(1, 1, 1, dtype=F64), eps / math.sqrt(6), rtol=0, atol=1e-15)


def test_wigner_3j_permutation_symmetry():
    for l1, l2, l3 in triples(5):
        c = so3.wigner_3j(l1, l2, l3, dtype=F64)
        s = (-1) ** (l1 + l2 + l3)
        torch.testing.assert_close(so3.wigner_3j(l2, l1, l3, dtype=F64).transpose(0, 1), s * c, rtol=0, atol=1e-15)
        torch.testing.assert_close(so3.wigner_3j(l1, l3, l2, dtype=F64).transpose(1, 2), s * c, rtol=0, atol=1e-15)


def test_wigner_3j_invariance():
    a, b, c = so3.rand_angles(3, dtype=F64)
    for l1, l2, l3 in triples(4) + [(6, 5, 7), (8, 8, 2)]:
        C = so3.wigner_3j(l1, l2, l3, dtype=F64)
        D1, D2, D3 = (so3.wigner_D(l, a, b, c) for l in (l1, l2, l3))
        rotated = torch.einsum("ijk,nia,njb,nkc->nabc", C, D1, D2, D3)
        torch.testing.assert_close(rotated, C.expand_as(rotated), rtol=0, atol=1e-12)


def test_wigner_3j_cache_not_corruptible():
    c1 = so3.wigner_3j(2, 3, 4, dtype=F64)
    expected = c1.clone()
    c1.mul_(7).add_(1)
    c2 = so3.wigner_3j(2, 3, 4, dtype=F64)
    assert torch.equal(c2, expected)
    assert c2.data_ptr() != so3.wigner_3j(2, 3, 4, dtype=F64).data_ptr()
    c2.zero_()
    assert torch.equal(so3.wigner_3j(2, 3, 4, dtype=F64), expected)
    assert not so3.wigner_3j(2, 3, 4).requires_grad


def test_wigner_3j_dtype_device():
    ref = so3.wigner_3j(3, 2, 4, dtype=F64)
    c32 = so3.wigner_3j(3, 2, 4, dtype=torch.float32)
    assert c32.dtype == torch.float32 and torch.equal(c32, ref.float())
    assert so3.wigner_3j(3, 2, 4).dtype == torch.get_default_dtype()
    assert so3.wigner_3j(3, 2, 4, device="cpu").device.type == "cpu"
    assert so3.wigner_3j(3, 2, 4, dtype=torch.float32, device=torch.device("cpu")).dtype == torch.float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        assert so3.wigner_3j(1, 1, 2).dtype == torch.float32
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("args", [(1, 1, 3), (0, 1, 2), (2, 5, 2), (-1, 1, 0), (1, -1, 1), (1, 1, -1), (1.5, 1, 1), ("1", 1, 1)])
def test_wigner_3j_invalid(args):
    with pytest.raises(ValueError, match=re.escape(f"l1={args[0]!r}, l2={args[1]!r}, l3={args[2]!r}")):
        so3.wigner_3j(*args)


def test_wigner_3j_accepts_integer_like():
    assert torch.equal(so3.wigner_3j(torch.tensor(1), 1, 2, dtype=F64), so3.wigner_3j(1, 1, 2, dtype=F64))


# ---------------------------------------------------------------------------------------
# Generators, change of basis, Wigner D
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("l", range(9))
def test_generators_and_change_of_basis_vs_e3nn(l):
    torch.testing.assert_close(so3.so3_generators(l, dtype=F64), o3.so3_generators(l), rtol=0, atol=1e-13)
    q = so3.change_basis_real_to_complex(l, dtype=F64)
    assert q.dtype == torch.complex128
    torch.testing.assert_close(q, o3.change_basis_real_to_complex(l, dtype=F64), rtol=0, atol=1e-15)
    assert so3.change_basis_real_to_complex(l, dtype=torch.float32).dtype == torch.complex64
    X = so3.so3_generators(l, dtype=F64)
    # [X_x, X_y] = X_z and cyclic
    for i, j, k in [(0, 1, 2), (1, 2, 0), (2, 0, 1)]:
        torch.testing.assert_close(X[i] @ X[j] - X[j] @ X[i], X[k], rtol=0, atol=1e-12)


@pytest.mark.parametrize("l", range(9))
def test_wigner_D_vs_e3nn(l):
    torch.manual_seed(l)
    a, b, c = so3.rand_angles(16, dtype=F64)
    ours = so3.wigner_D(l, a, b, c)
    assert ours.shape == (16, 2 * l + 1, 2 * l + 1) and ours.dtype == F64
    torch.testing.assert_close(ours, o3.wigner_D(l, a, b, c), rtol=0, atol=1e-10)
    # generator definition, directly
    X = so3.so3_generators(l, dtype=F64)
    e = torch.linalg.matrix_exp
    direct = e(a[:, None, None] * X[1]) @ e(b[:, None, None] * X[0]) @ e(c[:, None, None] * X[1])
    torch.testing.assert_close(ours, direct, rtol=0, atol=1e-12)


def test_wigner_D_l1_is_rotation_matrix():
    a, b, c = so3.rand_angles(10, dtype=F64)
    torch.testing.assert_close(so3.wigner_D(1, a, b, c), so3.angles_to_matrix(a, b, c), rtol=0, atol=1e-14)
    torch.testing.assert_close(so3.wigner_D(0, a, b, c), torch.ones(10, 1, 1, dtype=F64))


def test_wigner_D_broadcasting_dtype_grad():
    D = so3.wigner_D(2, torch.zeros(3, 1), torch.zeros(1, 4), torch.zeros(()))
    assert D.shape == (3, 4, 5, 5)
    assert so3.wigner_D(3, 0.1, 0.2, 0.3).shape == (7, 7)
    f32 = torch.tensor([0.3, 0.4], dtype=torch.float32)
    assert so3.wigner_D(2, f32, 0.5, f32).dtype == torch.float32
    ref = so3.wigner_D(4, f32.double(), 0.5, f32.double())
    torch.testing.assert_close(so3.wigner_D(4, f32, 0.5, f32), ref.float(), rtol=0, atol=1e-5)
    angles = [torch.tensor([0.3, 1.2], dtype=F64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda a, b, c: so3.wigner_D(3, a, b, c), angles)


def test_wigner_D_representation():
    a1, b1, c1 = so3.rand_angles(5, dtype=F64)
    a2, b2, c2 = so3.rand_angles(5, dtype=F64)
    a, b, c = so3.compose_angles(a1, b1, c1, a2, b2, c2)
    for l in [2, 5, 8]:
        torch.testing.assert_close(
            so3.wigner_D(l, a, b, c), so3.wigner_D(l, a1, b1, c1) @ so3.wigner_D(l, a2, b2, c2), rtol=0, atol=1e-12
        )
        D = so3.wigner_D(l, a1, b1, c1)
        torch.testing.assert_close(D @ D.transpose(-1, -2), torch.eye(2 * l + 1, dtype=F64).expand_as(D), rtol=0, atol=1e-12)
        torch.testing.assert_close(so3.wigner_D(l, *so3.inverse_angles(a1, b1, c1)), D.transpose(-1, -2), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Rotations and angles
# ---------------------------------------------------------------------------------------

def test_rand_matrix_orthogonal_and_same_rng_as_e3nn():
    R = so3.rand_matrix(100, dtype=F64)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=F64).expand(100, 3, 3), rtol=0, atol=1e-13)
    torch.testing.assert_close(torch.det(R), torch.ones(100, dtype=F64), rtol=0, atol=1e-13)
    for f in ["rand_matrix", "rand_angles", "identity_angles"]:
        torch.manual_seed(5)
        ours = getattr(so3, f)(4, 2, dtype=F64)
        torch.manual_seed(5)
        ref = getattr(o3, f)(4, 2, dtype=F64)
        ours, ref = (ours, ref) if isinstance(ours, tuple) else ((ours,), (ref,))
        for x, y in zip(ours, ref):
            assert x.shape == y.shape and torch.equal(x, y), f
    assert so3.rand_matrix(dtype=torch.float32).dtype == torch.float32
    assert so3.rand_matrix(2, requires_grad=True).requires_grad
    assert all(x.shape == () for x in so3.rand_angles())


def test_elementary_rotations_vs_e3nn():
    t = torch.linspace(-4, 4, 9, dtype=F64)
    for f in ["matrix_x", "matrix_y", "matrix_z"]:
        torch.testing.assert_close(getattr(so3, f)(t), getattr(o3, f)(t), rtol=0, atol=1e-15)
    a, b, c = so3.rand_angles(20, dtype=F64)
    torch.testing.assert_close(so3.angles_to_matrix(a, b, c), o3.angles_to_matrix(a, b, c), rtol=0, atol=1e-14)
    torch.testing.assert_close(
        so3.angles_to_matrix(a, b, c), so3.matrix_y(a) @ so3.matrix_x(b) @ so3.matrix_y(c), rtol=0, atol=1e-15
    )
    torch.testing.assert_close(so3.angles_to_xyz(a, b), o3.angles_to_xyz(a, b), rtol=0, atol=1e-15)
    v = torch.randn(20, 3, dtype=F64)
    for x, y in zip(so3.xyz_to_angles(v), o3.xyz_to_angles(v)):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-14)
    axis, angle = torch.randn(5, 3, dtype=F64), torch.randn(5, dtype=F64)
    torch.testing.assert_close(so3.axis_angle_to_matrix(axis, angle), o3.axis_angle_to_matrix(axis, angle), rtol=0, atol=1e-14)
    q = torch.nn.functional.normalize(torch.randn(5, 4, dtype=F64), dim=-1)
    torch.testing.assert_close(so3.quaternion_to_matrix(q), o3.quaternion_to_matrix(q), rtol=0, atol=1e-14)


def test_angle_round_trips():
    R = so3.rand_matrix(50, dtype=F64)
    angles = so3.matrix_to_angles(R)
    torch.testing.assert_close(so3.angles_to_matrix(*angles), R, rtol=0, atol=1e-12)
    for x, y in zip(angles, o3.matrix_to_angles(R)):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
    a, b, c = so3.rand_angles(50, dtype=F64)
    a2, b2, c2 = so3.matrix_to_angles(so3.angles_to_matrix(a, b, c))
    wrap = lambda t: torch.remainder(t + math.pi, 2 * math.pi) - math.pi  # noqa: E731
    torch.testing.assert_close(torch.cos(a2 - a), torch.ones_like(a), rtol=0, atol=1e-12)
    torch.testing.assert_close(wrap(c2 - c), torch.zeros_like(c), rtol=0, atol=1e-6)
    torch.testing.assert_close(b2, b, rtol=0, atol=1e-6)
    xyz = so3.angles_to_xyz(a, b)
    a3, b3 = so3.xyz_to_angles(xyz * 3.0)
    torch.testing.assert_close(so3.angles_to_xyz(a3, b3), xyz, rtol=0, atol=1e-12)
    # compose / inverse
    a1, b1, c1 = so3.rand_angles(10, dtype=F64)
    comp = so3.compose_angles(a1, b1, c1, *so3.inverse_angles(a1, b1, c1))
    torch.testing.assert_close(so3.angles_to_matrix(*comp), torch.eye(3, dtype=F64).expand(10, 3, 3), rtol=0, atol=1e-12)
    ident = so3.identity_angles(3, dtype=F64)
    torch.testing.assert_close(so3.angles_to_matrix(*ident), torch.eye(3, dtype=F64).expand(3, 3, 3))
