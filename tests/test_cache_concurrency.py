"""The kernel caches when several processes or threads start at once (issue 10).

* ``test_triton_kernels_from_racing_processes``: four processes, released together by a
  start file after their imports, run the real Triton tensor-product and convolution
  kernels (interpreter, small sizes) with one *empty* shared ``EQUIOPS_CACHE_DIR``: all
  generate and write the same kernel modules at the same moment (kernels/_codecache.py).
  Each must succeed with results bitwise equal to the others' and equal to the C++
  operators' (float64, 1e-12); the cache then holds exactly the expected modules, each
  passing the cache's own validity check and importable, and no temporary file.
  (tests/test_tp_triton.py races the cache's writer alone; this is end to end.)
* ``test_inductor_compile_from_racing_processes``: three processes, released together,
  ``torch.compile`` (fullgraph, inductor, CPU) one function calling our operators
  (spherical harmonics, a tensor product, scatter) with one empty shared
  ``TORCHINDUCTOR_CACHE_DIR`` (FX graph and AOT autograd entries holding our ops): all
  succeed, with the same outputs, equal to eager. No pointwise op, so inductor compiles no
  C++ of its own: that ~4x'd the test's time, and its cache locking is PyTorch's.
* ``test_threads_share_problem_cache_and_pool``: eight Python threads (the operators
  release the GIL) call the CPU tensor product and its backward on 16 problems no other
  test uses, so their parsed-problem entries (csrc/include/equiops/tp_problem.h) are
  created under contention, with outputs of 4 MB and more, so they come from and go back
  to the host output pool (csrc/cpu/host_pool.h) while other threads take blocks; every
  result must equal (bitwise: the CPU kernels are deterministic) the serial call's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import assert_close, triton_interpreter_enabled

HERE = Path(__file__).resolve().parent

# Shared by the child scripts: wait at the barrier, then run.
_BARRIER = textwrap.dedent(
    """
    import os, sys, time
    def barrier():
        ready, go = sys.argv[1], sys.argv[2]
        open(ready, "w").close()
        deadline = time.monotonic() + 600
        while not os.path.exists(go):
            if time.monotonic() > deadline:
                sys.exit("timed out at the start barrier")
            time.sleep(0.002)
    """
)


def _race(script: str, n: int, tmp: Path, env: dict, timeout: float = 600):
    """Starts ``n`` copies of ``script`` (args: ready file, start file, output file), waits
    until all have finished importing and reached the barrier, releases them together,
    and returns their output files. Fails with a child's stderr if one fails."""
    go = tmp / "go"
    procs, outs, readies = [], [], []
    for i in range(n):
        ready, out = tmp / f"ready{i}", tmp / f"out{i}.pt"
        readies.append(ready)
        outs.append(out)
        procs.append(subprocess.Popen([sys.executable, "-c", _BARRIER + script, str(ready), str(go), str(out)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(HERE)))
    try:
        deadline = time.monotonic() + timeout
        while not all(r.exists() for r in readies):
            for p in procs:
                if p.poll() is not None:
                    _, err = p.communicate()
                    pytest.fail(f"a process failed before the start barrier (status {p.returncode}):\n{err[-4000:]}")
            assert time.monotonic() < deadline, "processes did not reach the start barrier"
            time.sleep(0.01)
        go.touch()
        for i, p in enumerate(procs):
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert p.returncode == 0, f"process {i} failed (status {p.returncode}):\n{err[-4000:]}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return [torch.load(o) for o in outs]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    env["PYTHONPATH"] = os.pathsep.join([str(HERE)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# ----------------------------------------------------------------------------- Triton
_TRITON_CHILD = textwrap.dedent(
    """
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    import equiops
    from equiops.kernels import tensor_product as KT, tp_conv as KC

    torch.manual_seed(0)  # the same inputs in every process
    tp = equiops.ChannelWiseTensorProduct("4x0e+2x1o", "0e+1o", "4x0e+2x1o", shared_weights=False,
                                          internal_weights=False)
    p = tp.problem
    d1, d2, do, dw = tp.irreps_in1.dim, tp.irreps_in2.dim, tp.irreps_out.dim, tp.weight_numel
    f64 = torch.float64
    N, n, E = 40, 12, 40
    x1, x2, w, go = (torch.randn(N, d, dtype=f64) for d in (d1, d2, dw, do))
    src, dst = torch.randint(0, n, (E,)), torch.randint(0, n, (E,))
    perm = torch.sort(dst, stable=True).indices
    indptr = torch.zeros(n + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(torch.bincount(dst, minlength=n), 0)
    xe, ea, we, goc = (torch.randn(r, d, dtype=f64) for r, d in ((n, d1), (E, d2), (E, dw), (n, do)))
    barrier()
    res = {
        "tp": KT.forward(x1, x2, w, p),
        "tp_backward": KT.backward(go, x1, x2, w, p),
        "conv": KC.conv_forward(xe, ea, we, src, dst, perm, indptr, n, p),
        "conv_backward": KC.conv_backward(goc, xe, ea, we, src, dst, None, None, (True, True, True), p),
    }
    ops = torch.ops.equiops
    ref = {
        "tp": ops.tensor_product(x1, x2, w, p, "cpu"),
        "tp_backward": ops.tensor_product_backward(go, x1, x2, w, p, [True, True, True], "cpu"),
        "conv": ops.tp_conv(xe, ea, we, src, dst, None, None, None, None, n, p, "cpu"),
        "conv_backward": ops.tp_conv_backward(goc, xe, ea, we, src, dst, None, None, None, None,
                                              [True, True, True], p, "cpu"),
    }
    torch.save({"res": res, "ref": ref}, sys.argv[3])
    """
)


def _flat(d):
    out = []
    for k in sorted(d):
        v = d[k]
        out += [(f"{k}[{i}]", t) for i, t in enumerate(v)] if isinstance(v, (tuple, list)) else [(k, v)]
    return out


@pytest.mark.slow
@pytest.mark.triton_interpret
@pytest.mark.skipif(not triton_interpreter_enabled(), reason="runs the Triton kernels under the interpreter (no GPU)")
def test_triton_kernels_from_racing_processes(tmp_path):
    """Four processes racing to generate and cache the same Triton kernels all compute
    the same, right results, and leave only valid cache files behind."""
    from equiops.kernels import _codecache

    cache = tmp_path / "cache"
    cache.mkdir()
    runs = _race(_TRITON_CHILD, 4, tmp_path, _env(EQUIOPS_CACHE_DIR=cache, TRITON_INTERPRET=1))
    first = _flat(runs[0]["res"])
    for run in runs:
        got = _flat(run["res"])
        assert [k for k, _ in got] == [k for k, _ in first]
        for (name, a), (_, b) in zip(got, first):
            assert torch.equal(a, b), f"{name} differs between processes"
        for (name, a), (_, e) in zip(got, _flat(run["ref"])):
            assert_close(a, e, order=0 if name in ("tp", "conv") else 1)
    leftovers = [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".py"]
    assert not leftovers, f"temporary or stray files left in the cache: {leftovers}"
    modules = sorted(p for p in cache.rglob("*.py"))
    # One module per kernel kind and namespace: forward and backward of each.
    assert sorted(p.parent.name for p in modules) == ["triton_tp", "triton_tp", "triton_tp_conv", "triton_tp_conv"]
    for path in modules:
        assert _codecache._valid(path, path.stem), f"{path} is torn or foreign"
        compile(path.read_text(), str(path), "exec")


# ----------------------------------------------------------------------------- inductor
_COMPILE_CHILD = textwrap.dedent(
    """
    import torch
    import equiops

    torch.manual_seed(0)
    tp = equiops.FullyConnectedTensorProduct("4x0e+4x1o", "0e+1o", "4x0e+4x1o")
    vec, x, index = torch.randn(64, 3), torch.randn(64, 16), torch.randint(0, 8, (64,))

    def f(vec, x, index):
        sh = equiops.spherical_harmonics("0e+1o", vec, normalize=True)
        y = tp(x, sh)
        return equiops.scatter(y, index, dim=0, dim_size=8, reduce="sum")

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    barrier()
    with torch.no_grad():
        out = compiled(vec, x, index)
        again = compiled(vec, x, index)
        eager = f(vec, x, index)
    torch.save({"out": out, "again": again, "eager": eager}, sys.argv[3])
    """
)


@pytest.mark.slow
def test_inductor_compile_from_racing_processes(tmp_path):
    """Three processes compiling the same function over our operators at once, with one
    empty inductor cache, all succeed and agree (with each other and with eager)."""
    cache = tmp_path / "inductor"
    cache.mkdir()
    env = _env(TORCHINDUCTOR_CACHE_DIR=cache, TORCHINDUCTOR_COMPILE_THREADS=1)
    env.pop("TRITON_INTERPRET", None)  # a plain CPU process
    runs = _race(_COMPILE_CHILD, 3, tmp_path, env)
    for run in runs:
        assert torch.equal(run["out"], runs[0]["out"]), "compiled outputs differ between processes"
        assert torch.equal(run["again"], run["out"])
        assert_close(run["out"], run["eager"])
    assert any(cache.rglob("*")), "inductor wrote nothing to the shared cache"


# ----------------------------------------------------------------------------- threads
def _thread_problems():
    import equiops

    # Multiplicities no other test uses: these problem strings are new to the C++ cache.
    mods = []
    for m in range(17, 33):
        irreps = f"{m}x0e+{m // 2}x1o"
        # x2 = "0e": one coefficient per component, so the calls cost little beyond
        # moving their >= 4 MB of memory.
        mods.append(equiops.ChannelWiseTensorProduct(irreps, "0e", irreps, shared_weights=False,
                                                     internal_weights=False))
    return mods


@pytest.mark.slow
def test_threads_share_problem_cache_and_pool():
    """8 threads x 16 new problems x 3 rounds of forward + backward give the serial results."""
    ops = torch.ops.equiops
    g = torch.Generator().manual_seed(0)
    cases = []
    for k, tp in enumerate(_thread_problems()):
        do = tp.irreps_out.dim
        N = -(-(1 << 20) // do) + 37 * k  # outputs of >= 4 MB (pooled), several size classes
        x1, x2 = torch.randn(N, tp.irreps_in1.dim, generator=g), torch.randn(N, tp.irreps_in2.dim, generator=g)
        w, go = torch.randn(N, tp.weight_numel, generator=g), torch.randn(N, do, generator=g)
        cases.append((tp.problem, x1, x2, w, go))
    assert all(c[4].numel() * 4 >= 4 << 20 for c in cases)

    def run(case):
        p, x1, x2, w, go = case
        out = ops.tensor_product(x1, x2, w, p, "cpu")
        return [out] + list(ops.tensor_product_backward(go, x1, x2, w, p, [True, True, True], "cpu"))

    def in_threads(body, threads=8):
        errors, barrier = [], threading.Barrier(threads)

        def worker(tid):
            try:
                barrier.wait()
                body(tid)
            except BaseException as e:  # re-raised below: a thread cannot fail the test itself
                errors.append(e)

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        if errors:
            raise errors[0]

    def order(tid, r=0):
        ks = list(range(len(cases)))
        ks = ks[tid % len(ks):] + ks[: tid % len(ks)]
        return ks[::-1] if (tid + r) % 2 else ks

    names = ("out", "grad_x1", "grad_x2", "grad_weight")
    # Phase 1: every problem is first parsed while 8 threads ask for it; copies of the
    # results in ordinary memory (dropping the op's tensors returns their blocks to the
    # pool for the other threads).
    first = {}

    def phase1(tid):
        for k in order(tid):
            first[(tid, k)] = [t.clone() for t in run(cases[k])]

    in_threads(phase1)
    serial = [[t.clone() for t in run(c)] for c in cases]
    for (tid, k), got in first.items():
        for a, e, what in zip(got, serial[k], names):
            assert torch.equal(a, e), f"thread {tid}, problem {k}: {what} differs from the serial call"

    # Phase 2: two more rounds, each result checked while the other threads keep taking
    # and returning pool blocks (a block handed out twice would be overwritten under it).
    def phase2(tid):
        for r in (1, 2):
            for k in order(tid, r):
                for a, e, what in zip(run(cases[k]), serial[k], names):
                    assert torch.equal(a, e), f"thread {tid}, round {r}, problem {k}: {what} differs from serial"

    in_threads(phase2)
