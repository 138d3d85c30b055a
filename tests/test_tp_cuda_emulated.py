"""The CUDA C++ tensor-product kernels (csrc/cuda/tp_kernels.cuh), run on the CPU.

``tests/cuda_emulation/tp_emu.cpp`` compiles the real kernel source with g++ (no CUDA toolkit,
no torch headers): every CUDA thread is an OS thread, ``__syncthreads`` a barrier, blocks
run in turn over NaN-filled shared memory, inputs sit between NaN guards and outputs between
canaries (its header says what is and is not emulated). These tests compare it with
:mod:`equiops.reference.tensor_product` (float64, autograd for the derivatives) on small
problems, so that CI without a GPU catches bugs in the kernels; ``tests/test_tp_cuda.py``
runs the compiled kernels on a real GPU.

Set ``EQUIOPS_EMU_ASAN=1`` to also build the emulation with AddressSanitizer and
UndefinedBehaviorSanitizer and run a few cases under it (slow to compile, so off by default).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from equiops.reference.tensor_product import tensor_product as ref
from equiops.tp_problem import build_problem
from tp_cases import ALL_MODES, FULLY_CONNECTED

ROOT = Path(__file__).resolve().parents[1]
EMU_DIR = ROOT / "tests" / "cuda_emulation"
CXX = os.environ.get("EQUIOPS_EMU_CXX") or shutil.which("g++")

if CXX is None:
    pytest.skip("g++ not found: cannot build the CPU emulation of the CUDA kernels", allow_module_level=True)

# Relative error bound (max |error| / max |expected|) by dtype and derivative order.
REL = {
    ("f64", 0): 1e-10,
    ("f64", 1): 1e-10,
    ("f64", 2): 1e-10,
    ("f32", 0): 2e-5,
    ("f32", 1): 2e-5,
    ("f32", 2): 5e-5,
}
KTHREADS = 256  # threads per block of every real launch (tp_kernels.cuh kThreads)


def _build(out_dir: Path, sanitize: bool) -> Path:
    exe = out_dir / ("tp_emu_asan" if sanitize else "tp_emu")
    cmd = [CXX, "-std=c++17", "-pthread", "-Wall", "-Wextra"]
    if sanitize:
        cmd += ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    else:
        cmd += ["-O1"]
    cmd += ["-I", str(EMU_DIR / "shim"), "-I", str(ROOT / "csrc" / "cuda"), str(EMU_DIR / "tp_emu.cpp"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        pytest.fail(f"building the CUDA emulation failed:\n{' '.join(cmd)}\n{res.stderr[-6000:]}")
    return exe


class Emulator:
    """Runs one kernel computation in a fresh process of the compiled harness."""

    def __init__(self, exe: Path):
        self.exe = exe
        self.plan = None  # (R, zcap, grid, smem, ntiles) of the last call

    def __call__(self, op, p, dtype, x1, x2, w, go=None, gg=(None, None, None), need=(1, 1, 1), nthreads=32, max_grid=0):
        s = p.encode()
        arrays = [x1, x2, w, go, *gg]
        has = " ".join(str(int(a is not None)) for a in arrays[3:])
        head = (
            f"tp_emu-1 {dtype} {op} {x1.shape[0]} {x2.shape[0]} {w.shape[0]} {int(need[0])} {int(need[1])} "
            f"{int(need[2])} {nthreads} {max_grid} {has} {len(s.encode())}\n"
        )
        body = head.encode() + s.encode()
        body += b"".join(a.detach().double().contiguous().numpy().tobytes() for a in arrays if a is not None)
        res = subprocess.run([str(self.exe)], input=body, capture_output=True, timeout=120)
        assert res.returncode == 0, f"tp_emu failed ({res.returncode}): {res.stderr.decode(errors='replace')[-4000:]}"
        eol = res.stdout.index(b"\n")
        tag, *plan = res.stdout[:eol].decode().split()
        assert tag == "ok"
        self.plan = tuple(int(v) for v in plan)
        flat = torch.from_numpy(np.frombuffer(res.stdout[eol + 1 :], dtype=np.float64).copy())
        N = 1
        for t in (x1, x2, w):
            N = t.shape[0] if t.shape[0] != 1 else N
        shapes = []
        if op != 1:
            shapes.append((N, p.dim_out))
        shapes += [t.shape for t, k in zip((x1, x2, w), need) if op == 2 or (op == 1 and k)]
        outs = list(torch.split(flat, [math.prod(s) for s in shapes]))
        assert sum(math.prod(s) for s in shapes) == flat.numel()
        return [o.view(s) for o, s in zip(outs, shapes)]


@pytest.fixture(scope="session")
def emu(tmp_path_factory):
    return Emulator(_build(tmp_path_factory.mktemp("tp_emu"), sanitize=False))


@pytest.fixture(scope="session")
def emu_asan(tmp_path_factory):
    if os.environ.get("EQUIOPS_EMU_ASAN") != "1":
        pytest.skip("set EQUIOPS_EMU_ASAN=1 to run the emulation under ASan/UBSan (slow to build)")
    return Emulator(_build(tmp_path_factory.mktemp("tp_emu_asan"), sanitize=True))


# ---------------------------------------------------------------------------------------
# Problems and cases.


def _problems():
    return {
        # Channel-wise (NequIP / MACE style): uvu, one unweighted path writing the same
        # block as a weighted one.
        "uvu": build_problem(
            "3x0e+2x1o+2x2e",
            "0e+1o+2e",
            "3x0e+3x1o+2x1o+2x1e+2x2e+2x3o",
            [
                (0, 0, 0, "uvu", True),
                (0, 1, 1, "uvu", True),
                (1, 0, 2, "uvu", True),
                (1, 1, 3, "uvu", True),
                (1, 2, 2, "uvu", False),
                (2, 2, 4, "uvu", True),
                (2, 1, 5, "uvu", True),
            ],
        ),
        # Fully connected (uvw), used with shared weights.
        "uvw": build_problem(*FULLY_CONNECTED),
        # Every mode, weighted and unweighted, several paths per output block, a path weight.
        "modes": build_problem(*ALL_MODES),
        # Many channel pairs: one row's pairs do not fit shared memory at once (several
        # chunks per path in every kernel and dtype).
        "chunked": build_problem(
            "48x1o+3x2e",
            "48x1o+3x0e",
            "5x2e+3x2e",
            [(0, 0, 0, "uvw", True), (1, 1, 1, "uvv", True), (1, 1, 1, "uvu", True)],
        ),
    }


PROBLEMS = _problems()

# name -> (problem, N, (N1, N2, Nw), threads per block, grid cap)
CASES = {
    "uvu-rows7": ("uvu", 7, (7, 7, 7), 32, 0),
    "uvu-N1": ("uvu", 1, (1, 1, 1), KTHREADS, 0),
    "uvu-x2-broadcast": ("uvu", 13, (13, 1, 13), 32, 0),
    "uvw-shared-weights": ("uvw", 9, (9, 9, 1), KTHREADS, 0),
    "uvw-x1-broadcast": ("uvw", 6, (1, 6, 6), 7, 0),
    "modes-rows5": ("modes", 5, (5, 5, 5), 32, 0),
    "modes-x1-w-broadcast": ("modes", 11, (1, 11, 1), 32, 0),
    # A grid smaller than the tiles: blocks walk several tiles and add them into their own
    # workspace row (what large N does on a GPU).
    "modes-grid-stride": ("modes", 17, (17, 1, 1), 16, 2),
    "chunked-rows3": ("chunked", 3, (3, 3, 3), 64, 0),
}

NEEDS = [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (0, 0, 0)]
GG_ABSENT = [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


def _inputs(p, N, rows, dtype, seed=0):
    """x1, x2, w, go, gg1, gg2, ggw in float64, rounded to float32 for "f32"."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(rows[0], p.dim1), (rows[1], p.dim2), (rows[2], p.dim_w), (N, p.dim_out)]
    shapes += shapes[:3]
    ts = [torch.randn(s, dtype=torch.float64, generator=g) for s in shapes]
    if dtype == "f32":
        ts = [t.float().double() for t in ts]
    return ts


def _reference(p, x1, x2, w, go, gg):
    """The reference's forward, backward (x1, x2, w) and double backward: dd[k] lists the
    derivatives (grad_out, x1, x2, w) of <grad of input k, gg[k]>; the double backward of a
    set of gg is the sum of their dd (it is linear in them).

    Broadcast inputs are expanded to N rows first and their derivatives summed over the
    rows afterwards (the same values; autograd is much faster without the broadcasting)."""
    N = go.shape[0]
    leaves = [t.detach().expand(N, -1).clone().requires_grad_(True) for t in (x1, x2, w)]
    go = go.detach().clone().requires_grad_(True)
    out = ref(*leaves, p)
    grads = torch.autograd.grad(out, leaves, go, create_graph=True)

    def fold(t, like):  # a derivative w.r.t. expanded rows, back to the input's rows
        return t.sum(0, keepdim=True) if like.shape[0] == 1 and N != 1 else t

    dd = []
    for k in range(3):
        ggk = gg[k].detach().expand(N, -1)
        d = torch.autograd.grad((grads[k] * ggk).sum(), [go, *leaves], retain_graph=True, allow_unused=True)
        d = [torch.zeros_like(t) if e is None else e.detach() for e, t in zip(d, [go, *leaves])]
        dd.append([d[0]] + [fold(e, t) for e, t in zip(d[1:], (x1, x2, w))])
    return out.detach(), [fold(g.detach(), t) for g, t in zip(grads, (x1, x2, w))], dd


def _assert_rel(actual, expected, dtype, order, what):
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert not torch.isnan(actual).any(), f"{what}: NaN (a read of unwritten shared memory or out of bounds?)"
    if expected.numel() == 0:
        return
    err = float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))
    if float(expected.abs().max()) == 0.0:
        err = float(actual.abs().max())
    assert err <= REL[(dtype, order)], f"{what}: relative error {err:.3g} > {REL[(dtype, order)]:.3g}"


# ---------------------------------------------------------------------------------------
# Tests.


@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(emu, case, dtype):
    pname, N, rows, nthreads, max_grid = CASES[case]
    p = PROBLEMS[pname]
    x1, x2, w, go, gg1, gg2, ggw = _inputs(p, N, rows, dtype)
    kw = dict(nthreads=nthreads, max_grid=max_grid)
    r_out, r_g, r_dd = _reference(p, x1, x2, w, go, (gg1, gg2, ggw))

    (out,) = emu(0, p, dtype, x1, x2, w, **kw)
    _assert_rel(out, r_out, dtype, 0, f"{case} forward")

    for need in NEEDS if dtype == "f64" else NEEDS[:1]:
        res = emu(1, p, dtype, x1, x2, w, go=go, need=need, **kw)
        expected = [g for g, k in zip(r_g, need) if k]
        assert len(res) == len(expected)
        for k, (a, e) in enumerate(zip(res, expected)):
            _assert_rel(a, e, dtype, 1, f"{case} backward need={need} result {k}")

    for absent in GG_ABSENT if dtype == "f64" else GG_ABSENT[:2]:
        ggs = tuple(None if i in absent else t for i, t in enumerate((gg1, gg2, ggw)))
        expected = [
            sum((r_dd[k][i] for k in range(3) if k not in absent), torch.zeros_like(t))
            for i, t in enumerate((go, x1, x2, w))
        ]
        res = emu(2, p, dtype, x1, x2, w, go=go, gg=ggs, **kw)
        for name, a, e in zip(("grad_out", "x1", "x2", "weight"), res, expected):
            _assert_rel(a, e, dtype, 2, f"{case} double backward absent gg={absent}: d/d{name}")


def test_cases_exercise_the_kernels(emu):
    """The cases above reach the code paths they are meant to (guards against silent drift
    of kThreads / the shared-memory budget making them vacuous)."""
    plans = {}
    for case, (pname, N, rows, nthreads, max_grid) in CASES.items():
        p = PROBLEMS[pname]
        x1, x2, w, go, *_ = _inputs(p, N, rows, "f32")
        for op in (0, 1):
            emu(op, p, "f32", x1, x2, w, go=go if op else None, nthreads=nthreads, max_grid=max_grid)
            plans[case, op] = emu.plan  # R, zcap, grid, smem, ntiles
    # Several chunks per path: some path's pairs of a tile exceed one buffer (forward and backward).
    big = PROBLEMS["chunked"]
    for op in (0, 1):
        R, zcap = plans["chunked-rows3", op][:2]
        assert max(len(q.pairs()) * q.dk for q in big.paths) * R > zcap
    # Several rows per tile, several tiles, the last one partial; blocks walking several tiles.
    R, _, grid, _, ntiles = plans["modes-grid-stride", 1]
    assert R > 1 and 17 % R != 0 and grid == 2 and ntiles > grid


def test_bitwise_independent_of_block_size(emu):
    """Every result element has one owner thread and a fixed order: the same bits whatever
    the number of threads per block."""
    p = PROBLEMS["modes"]
    x1, x2, w, go, gg1, gg2, ggw = _inputs(p, 10, (10, 1, 10), "f64", seed=3)
    for op in (0, 1, 2):
        kw = dict(go=go if op else None, gg=(gg1, gg2, ggw) if op == 2 else (None, None, None))
        results = [emu(op, p, "f64", x1, x2, w, nthreads=n, **kw) for n in (KTHREADS, 5, 1)]
        for other in results[1:]:
            for a, b in zip(results[0], other):
                assert torch.equal(a, b), f"op {op}: results depend on the block size"


def test_zero_rows_and_empty_gradients(emu):
    """N = 0 (nothing launched: zeros of the right shapes), and a broadcast input's
    gradient when no kernel runs."""
    p = PROBLEMS["uvu"]
    x1, x2, w, go, gg1, gg2, ggw = _inputs(p, 0, (0, 1, 0), "f64")
    (out,) = emu(0, p, "f64", x1, x2, w)
    assert out.shape == (0, p.dim_out)
    g1, g2, gw = emu(1, p, "f64", x1, x2, w, go=go)
    assert g1.shape == x1.shape and gw.shape == w.shape
    assert g2.shape == x2.shape and torch.equal(g2, torch.zeros_like(g2))
    res = emu(2, p, "f64", x1, x2, w, go=go, gg=(gg1, gg2, ggw))
    assert [r.shape for r in res] == [go.shape, x1.shape, x2.shape, w.shape]
    assert all(torch.equal(r, torch.zeros_like(r)) for r in res)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_types_instantiate(emu, dtype):
    """The 16-bit instantiations (their arithmetic is not emulated: the stand-in types hold
    floats, so this checks the templates' float accumulation and indexing only)."""
    p = PROBLEMS["modes"]
    x1, x2, w, go, gg1, gg2, ggw = _inputs(p, 4, (4, 4, 1), "f32")
    r_out, r_g, _ = _reference(p, x1, x2, w, go, (gg1, gg2, ggw))
    (out,) = emu(0, p, dtype, x1, x2, w)
    _assert_rel(out, r_out, "f32", 0, f"{dtype} forward")
    for k, (a, e) in enumerate(zip(emu(1, p, dtype, x1, x2, w, go=go), r_g)):
        _assert_rel(a, e, "f32", 1, f"{dtype} backward result {k}")


@pytest.mark.parametrize("case", ["modes-grid-stride", "chunked-rows3"])
def test_under_address_sanitizer(emu_asan, case):
    pname, N, rows, nthreads, max_grid = CASES[case]
    p = PROBLEMS[pname]
    x1, x2, w, go, gg1, gg2, ggw = _inputs(p, N, rows, "f64")
    r_out, r_g, r_dd = _reference(p, x1, x2, w, go, (gg1, gg2, ggw))
    r_dd = [sum(d[i] for d in r_dd) for i in range(4)]
    kw = dict(nthreads=min(nthreads, 8), max_grid=max_grid)
    (out,) = emu_asan(0, p, "f64", x1, x2, w, **kw)
    _assert_rel(out, r_out, "f64", 0, f"{case} forward")
    for a, e in zip(emu_asan(1, p, "f64", x1, x2, w, go=go, **kw), r_g):
        _assert_rel(a, e, "f64", 1, f"{case} backward")
    for a, e in zip(emu_asan(2, p, "f64", x1, x2, w, go=go, gg=(gg1, gg2, ggw), **kw), r_dd):
        _assert_rel(a, e, "f64", 2, f"{case} double backward")
