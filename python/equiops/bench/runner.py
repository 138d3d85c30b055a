"""``python -m equiops bench``: check, then time, every op family against its baselines."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from typing import Dict, List, Optional

import torch

from . import egnn as egnn_bench
from . import harmonics as harmonics_bench
from . import lieconv as lieconv_bench
from . import scatter as scatter_bench
from . import tensor_product as tp_bench
from . import tp_conv as conv_bench
from . import tfn as tfn_bench
from .timing import copy_bandwidth, time_interleaved

FAMILIES = ("scatter", "sh", "tp", "conv", "tfn", "egnn", "lieconv")  # grows as op families land

# Float32 sums of ~16 N(0, 1) terms in another order differ from float64 by ~1e-6.
_CHECK_TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12)}


def environment(device: torch.device) -> Dict[str, object]:
    import equiops

    env = {
        "equiops": equiops.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "commit": _git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "baselines": _baseline_versions(),
        # Transparent huge pages for large CPU allocations (read by PyTorch at start-up;
        # set by the user for every candidate alike, never by the benchmark).
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "loadavg": _loadavg(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    return env


_BASELINE_PACKAGES = ("e3nn", "sphericart-torch", "torch-scatter", "cuequivariance-torch", "openequivariance")


def _baseline_versions() -> Dict[str, str]:
    """Installed versions of the baseline packages (absent ones are left out)."""
    out = {}
    for name in _BASELINE_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _loadavg() -> Optional[str]:
    """The 1/5/15-minute load averages (Linux): other work on a shared machine skews CPU times."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def _git_commit() -> Optional[str]:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _progress(i: int, n: int, what: str) -> None:
    width = 24
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {what:<48}")
    sys.stderr.flush()
    if i == n:
        sys.stderr.write("\n")


def _check(out: torch.Tensor, expected: torch.Tensor, dtype) -> bool:
    rtol, atol = _CHECK_TOL.get(dtype, (1e-2, 1e-2))
    return bool(torch.allclose(out.double(), expected.double(), rtol=rtol, atol=atol))


def _check_relative(out: torch.Tensor, expected: torch.Tensor, dtype) -> bool:
    """Max error relative to the largest expected magnitude: harmonics gradients scale as
    1/|x| per row and carry float32 cancellation (the radial projection) at that scale."""
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}.get(dtype, 1e-2)
    err = (out.double() - expected.double()).abs().max()
    return bool(err <= tol * expected.double().abs().max().clamp_min(1e-300))


def _row(op, problem, name, kind, reference, pass_, times, moved):
    t = times.get(name)
    row = {
        "op": op,
        "problem": problem,
        "variant": name,
        "kind": kind,
        "pass": pass_,
        "median_ms": t["median_s"] * 1e3 if t else None,
        "min_ms": t["min_s"] * 1e3 if t else None,
        "max_ms": t["max_s"] * 1e3 if t else None,
        "baseline": reference,
        "baseline_ms": times[reference]["median_s"] * 1e3 if reference in times else None,
        "gb_per_s": moved / t["median_s"] / 1e9 if (t and moved) else None,
    }
    row["speedup"] = (row["baseline_ms"] / row["median_ms"]) if (row["median_ms"] and row["baseline_ms"]) else None
    return row


def run_scatter(device: torch.device, dtype, quick: bool, backend: str) -> List[Dict[str, object]]:
    rows: List[Dict[str, object]] = []
    problems = scatter_bench.problems(quick)
    repeats = 5 if quick else 9
    for i, problem in enumerate(problems):
        _progress(i, len(problems), f"scatter {problem.label}")
        inputs = scatter_bench.make_inputs(problem, device, dtype)
        expected = scatter_bench.expected_sum(problem, inputs)
        nbytes = scatter_bench.bytes_moved(problem, dtype)

        forward = scatter_bench.forward_candidates(problem, inputs, backend)
        backward = scatter_bench.backward_candidates(problem, inputs, backend)
        ones = torch.ones(problem.num_edges, problem.width, dtype=torch.float64, device=device)
        checks = {}
        for group, exp in ((forward, expected), (backward, ones)):
            for kind in ("ours", "baselines"):
                for name, fn in group[kind].items():
                    checks[name] = _check(fn(), exp, dtype)
        timed = {
            name: fn
            for group in (forward, backward)
            for kind in ("ours", "baselines")
            for name, fn in group[kind].items()
            if checks[name]
        }
        timed["Graph build (CSR, both views)"] = scatter_bench.graph_build(problem, inputs)
        times = time_interleaved(timed, device, repeats=repeats)

        def add(name, kind, reference, pass_, moved):
            rows.append(_row("scatter", problem.label, name, kind, reference, pass_, times, moved))

        for name in forward["ours"]:
            add(name, "ours", "index_add_", checks[name], nbytes)
        for name in forward["baselines"]:
            add(name, "baseline", "index_add_", checks[name], nbytes)
        for name in backward["ours"]:
            add(name, "ours", "index_add fwd+bwd", checks[name], None)
        for name in backward["baselines"]:
            add(name, "baseline", "index_add fwd+bwd", checks[name], None)
        add("Graph build (CSR, both views)", "ours (one-off)", None, True, None)
    _progress(len(problems), len(problems), "done")
    return rows


def run_harmonics(device: torch.device, dtype, quick: bool, backend: str) -> List[Dict[str, object]]:
    """Spherical harmonics, all degrees 0..l_max: ours against sphericart and e3nn
    (each of our rows once per baseline): forward, forward+backward, force training."""
    rows: List[Dict[str, object]] = []
    problems = harmonics_bench.problems(quick, device)
    for i, problem in enumerate(problems):
        _progress(i, len(problems), f"sh {problem.label}")
        inputs = harmonics_bench.make_inputs(problem, device, dtype)
        cands = harmonics_bench.candidates(problem, inputs, backend)
        expected = harmonics_bench.expected(problem, inputs)
        # Gradients are checked against ours in float64 (ours is tested against e3nn's
        # autograd to 1e-10 in tests/test_spherical_harmonics.py).
        ref_inputs = {k: v.detach().double().cpu() for k, v in inputs.items()}
        ref = harmonics_bench.candidates(problem, ref_inputs, "auto")
        expect = {"forward": expected, "backward": ref["backward"]["equiops fwd+bwd"](), "force": ref["force"]["equiops force"]()}
        checks = {name: _check_relative(fn().cpu(), expect[group], dtype) for group, fns in cands.items() for name, fn in fns.items()}
        timed = {name: fn for group in cands.values() for name, fn in group.items() if checks[name]}
        big = problem.num_vectors * problem.width > 20_000_000
        times = time_interleaved(timed, device, repeats=3 if big else (4 if quick else 5), warmup=1, burst=3)
        moved = harmonics_bench.bytes_moved(problem, dtype)
        for group, ours in (("forward", "equiops"), ("backward", "equiops fwd+bwd"), ("force", "equiops force")):
            baselines = [n for n in cands[group] if n != ours]
            gbs = moved if group == "forward" else None
            for ref_name in baselines or [None]:
                rows.append(_row("sh", problem.label, ours, "ours", ref_name, checks[ours], times, gbs))
            for name in baselines:
                rows.append(_row("sh", problem.label, name, "baseline", None, checks[name], times, gbs))
    _progress(len(problems), len(problems), "done")
    return rows


def _safe_call(fn):
    """(result, None) or (None, "Error: message"); frees the GPU cache after a failure."""
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - reported in the row, never fatal
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]


def run_tp(
    device: torch.device,
    dtype,
    quick: bool,
    backend: str,
    problems: Optional[List[str]] = None,
    passes: Optional[List[str]] = None,
    compile_e3nn: Optional[bool] = None,
    budget_s: Optional[float] = None,
) -> List[Dict[str, object]]:
    """Tensor products (equiops.bench.tensor_product): ours against e3nn eager and, on a
    GPU, e3nn compiled, cuEquivariance and OpenEquivariance; forward, fwd+bwd, force.

    ``problems``/``passes`` select a subset; ``compile_e3nn`` (default: on CUDA only,
    where it is e3nn's recommended mode; on the CPU compiling would dominate the run);
    ``budget_s``: start no new problem after that many seconds (the skipped ones get a
    row saying so), for the time-boxed GPU check."""
    import time

    rows: List[Dict[str, object]] = []
    groups = [g for g in tp_bench.GROUPS if passes is None or g in passes]
    compile_e3nn = device.type == "cuda" if compile_e3nn is None else compile_e3nn
    probs = tp_bench.problems(quick, device, problems)
    t_start = time.perf_counter()
    for i, problem in enumerate(probs):
        if budget_s is not None and time.perf_counter() - t_start > budget_s:
            for p in probs[i:]:
                rows.append({**_row("tp", p.label, "(not run)", "baseline", None, None, {}, None),
                             "note": f"skipped: the {budget_s:.0f} s budget was spent"})
            break
        _progress(i, len(probs), f"tp {problem.label}")
        rows += _run_tp_problem(problem, device, dtype, backend, groups, compile_e3nn, quick)
    _progress(len(probs), len(probs), "done")
    return rows


def _run_tp_problem(problem, device, dtype, backend, groups, compile_e3nn, quick) -> List[Dict[str, object]]:
    """Rows of one tensor-product problem. ``pass``: True, False (a wrong answer, or
    ours failing to run) or None (a baseline that could not be built or run: the row
    says why and has no time)."""
    # 1. Float64 at a few rows, every candidate against the reference (e3nn eager).
    small = problem.with_rows(tp_bench.CHECK_ROWS)
    inputs64 = tp_bench.make_inputs(small, device, torch.float64)
    ref = tp_bench.passes(tp_bench.reference_candidate(small, device), inputs64, groups)
    expected64 = {g: fn() for g, fn in ref.items()}
    cands64, errors = tp_bench.build(small, device, torch.float64, backend, compile_e3nn, check_only=True)
    ok64: Dict[str, Optional[bool]] = {}  # None: the candidate could not run in float64
    notes: Dict[str, str] = {}
    for name, cand in cands64.items():
        for group, fn in tp_bench.passes(cand, inputs64, groups).items():
            key = name + tp_bench.SUFFIX[group]
            got, err = _safe_call(fn)
            if err:
                ok64[key], notes[key] = None, f"float64 check: {err}"
            else:
                expected = tp_bench.in_layout(expected64[group], group, cand)
                ok64[key] = tp_bench.agree(got, expected, tp_bench.CHECK_TOL_F64)
    del cands64, inputs64, ref, expected64

    # 2. The timed size and dtype: the first call checks against e3nn eager and warms up.
    inputs = tp_bench.make_inputs(problem, device, dtype)
    cands, build_errors = tp_bench.build(problem, device, dtype, backend, compile_e3nn)
    errors.update(build_errors)
    tol = tp_bench.TIMED_TOL.get(dtype, 1e-2)
    fns: Dict[str, object] = {}
    entries = []  # (group, key, kind, pass)
    for group in groups:
        per = {name: tp_bench.passes(c, inputs, (group,))[group] for name, c in cands.items()}
        if group == "force":
            per.pop("e3nn compiled", None)  # PyTorch cannot compile a double backward
        reference = None
        for name in sorted(per, key=lambda n: n != "e3nn"):  # e3nn eager first: the reference
            cand, key = cands[name], name + tp_bench.SUFFIX[group]
            got, err = _safe_call(per[name])
            if err:
                notes[key] = err
                entries.append((group, key, cand.kind, False if cand.kind == "ours" else None))
                continue
            if name == "e3nn":
                reference = got
            checked = ok64.get(key) if cand.checked_f64 else None
            if checked is None and cand.kind == "ours":
                checked = False  # ours must pass the float64 check
            ok = checked is not False
            if reference is not None and name != "e3nn":
                ok = ok and tp_bench.agree(got, tp_bench.in_layout(reference, group, cand), tol)
            del got
            entries.append((group, key, cand.kind, ok))
            if ok:
                fns[key] = per[name]
        del reference
    if device.type == "cuda":
        times = time_interleaved(fns, device, repeats=5 if quick else 10, warmup=1)
    else:
        times = time_interleaved(fns, device, repeats=3 if quick else 5, warmup=0)

    rows: List[Dict[str, object]] = []
    moved = tp_bench.bytes_moved(problem, dtype)

    def add(group, name, kind, ref_name, status):
        row = _row("tp", problem.label, name, kind, ref_name, status, times, moved if group == "forward" else None)
        t = times.get(name)
        row["gflop_per_s"] = tp_bench.flops(problem, group) / t["median_s"] / 1e9 if t else None
        row["rows"] = problem.rows
        if name in notes:
            row["note"] = notes[name]
        rows.append(row)

    for group in groups:
        mine = [e for e in entries if e[0] == group]
        baselines = [key for _, key, kind, _ in mine if kind != "ours"]
        for _, key, kind, ok in mine:
            if kind == "ours":
                for ref_name in [b for b in baselines if b in times] or [None]:
                    add(group, key, "ours", ref_name, ok)
        for _, key, kind, ok in mine:
            if kind != "ours":
                add(group, key, "baseline", None, ok)
    for name, err in errors.items():
        rows.append({**_row("tp", problem.label, name, "baseline", None, None, {}, None), "note": f"not built: {err}"})
    return rows


def run_conv(
    device: torch.device,
    dtype,
    quick: bool,
    backend: str,
    problems: Optional[List[str]] = None,
    memory: bool = True,
) -> List[Dict[str, object]]:
    """Fused tensor-product convolution (equiops.bench.tp_conv): ours fused and unfused
    against e3nn's TP on gathered edges + index_add_, forward and fwd+bwd, time and
    peak extra memory (``memory``: on the CPU one fresh process per candidate and pass)."""
    rows: List[Dict[str, object]] = []
    probs = conv_bench.problems(quick, problems)
    threads = torch.get_num_threads()
    for i, problem in enumerate(probs):
        _progress(i, len(probs), f"conv {problem.label}")
        # 1. Float64 on a small graph: every candidate against e3nn (or the fused one
        # against our unfused pipeline without e3nn).
        small = conv_bench.make_inputs(problem, *conv_bench.CHECK, torch.float64, device, seed=1)
        cands64 = conv_bench.candidates(problem, small, torch.float64, device, backend)
        ref_name = "e3nn unfused" if "e3nn unfused" in cands64 else "equiops unfused"
        ok64: Dict[str, Optional[bool]] = {}
        notes: Dict[str, str] = {}
        for group in conv_bench.GROUPS:
            want = conv_bench.passes(cands64[ref_name], small, (group,))[group]()
            for name, fn in cands64.items():
                key = name + conv_bench.SUFFIX[group]
                got, err = _safe_call(conv_bench.passes(fn, small, (group,))[group])
                if err:
                    ok64[key], notes[key] = None, f"float64 check: {err}"
                else:
                    ok64[key] = conv_bench.agree(got, want, 1e-10)
        del small, cands64
        # 2. The timed size: the first call checks against the reference and warms up.
        inputs = conv_bench.make_inputs(problem, problem.nodes, problem.edges, dtype, device)
        cands = conv_bench.candidates(problem, inputs, dtype, device, backend)
        tol = {torch.float32: 1e-4, torch.float64: 1e-10}.get(dtype, 1e-2)
        fns: Dict[str, object] = {}
        entries = []
        for group in conv_bench.GROUPS:
            per = {name: conv_bench.passes(fn, inputs, (group,))[group] for name, fn in cands.items()}
            reference = None
            for name in sorted(per, key=lambda n: n != ref_name):
                key = name + conv_bench.SUFFIX[group]
                kind = "ours" if name.startswith("equiops") else "baseline"
                got, err = _safe_call(per[name])
                if err:
                    notes[key] = err
                    entries.append((group, key, kind, False if kind == "ours" else None))
                    continue
                if name == ref_name:
                    reference = got
                ok = ok64.get(key) is True and (reference is None or conv_bench.agree(got, reference, tol))
                entries.append((group, key, kind, ok))
                if ok:
                    fns[key] = per[name]
            del reference
        if device.type == "cuda":
            times = time_interleaved(fns, device, repeats=5 if quick else 10, warmup=1)
        else:
            times = time_interleaved(fns, device, repeats=3 if quick else 5, warmup=0)
        peaks: Dict[str, Optional[int]] = {}
        if memory:
            for group, key, kind, ok in entries:
                if not ok:
                    continue
                name = key[: len(key) - len(conv_bench.SUFFIX[group])]
                if device.type == "cuda":
                    peaks[key] = conv_bench.peak_extra_bytes(fns[key], device)
                else:
                    peaks[key] = conv_bench.measure_memory_subprocess(
                        problem.name, name, group, problem.nodes, problem.edges, dtype, backend, threads
                    )
        for group in conv_bench.GROUPS:
            mine = [e for e in entries if e[0] == group]
            base = ref_name + conv_bench.SUFFIX[group]
            for _, key, kind, ok in mine:
                row = _row("conv", problem.label, key, kind, base if (kind == "ours" and base in times) else None, ok,
                           times, None)
                row["peak_extra_MB"] = peaks[key] / 2**20 if peaks.get(key) is not None else None
                base_peak = peaks.get(base)
                if kind == "ours" and peaks.get(key) is not None and base_peak:
                    row["memory_ratio"] = peaks[key] / base_peak
                if key in notes:
                    row["note"] = notes[key]
                rows.append(row)
        del inputs, cands, fns
    _progress(len(probs), len(probs), "done")
    return rows


def run_tfn(device: torch.device, dtype, quick: bool, backend: str) -> List[Dict[str, object]]:
    """One TFN layer (equiops.bench.tfn) against its e3nn composition: forward, fwd+bwd,
    a force-training step."""
    return tfn_bench.run(device, dtype, quick, backend, _row, _safe_call, time_interleaved, _progress)


def run_egnn(device: torch.device, dtype, quick: bool, backend: str, **options) -> List[Dict[str, object]]:
    """A 4-layer EGNN (equiops.bench.egnn): equiops.nn.EGNN (fused) against the plain-PyTorch
    model, forward and fwd+bwd, time and peak extra memory; ``options``: graphs, nodes,
    hidden, layers, memory (:func:`equiops.bench.egnn.run`)."""
    return egnn_bench.run(device, dtype, quick, backend, _row, _safe_call, time_interleaved, _progress, **options)


def run_lieconv(device: torch.device, dtype, quick: bool, backend: str, **options) -> List[Dict[str, object]]:
    """LieConv (equiops.bench.lieconv): one equiops.nn.LieConv (sparse neighbourhoods, fused
    PointConv) against the original's dense all-pairs layer, forward and fwd+bwd, time and
    peak extra memory; a 2-layer LieResNet on a 20,000-point cloud (no baseline); ``options``:
    sizes, nbhd, channels, batch, scale_points, scale_modes, memory (:func:`equiops.bench.lieconv.run`)."""
    return lieconv_bench.run(device, dtype, quick, backend, _row, _safe_call, time_interleaved, _progress, **options)


RUNNERS = {"scatter": run_scatter, "sh": run_harmonics, "tp": run_tp, "conv": run_conv, "tfn": run_tfn,
           "egnn": run_egnn, "lieconv": run_lieconv}


def _status(r) -> str:
    return {True: "ok", False: "WRONG", None: "error"}[r["pass"]]


def format_table(rows: List[Dict[str, object]]) -> str:
    header = ["op", "problem", "variant", "pass", "ms", "baseline", "base ms", "speedup", "GB/s"]
    flops = any(r.get("gflop_per_s") is not None for r in rows)
    memory = any(r.get("peak_extra_MB") is not None for r in rows)
    notes = any(r.get("note") for r in rows)
    if flops:
        header.append("GFLOP/s")
    if memory:
        header += ["peak MB", "mem ratio"]
    if notes:
        header.append("note")
    lines = []
    for r in rows:
        line = [
            str(r["op"]),
            str(r["problem"]),
            str(r["variant"]),
            _status(r),
            f"{r['median_ms']:.3f}" if r["median_ms"] is not None else "-",
            str(r["baseline"] or "-") if r["kind"] == "ours" else "-",
            f"{r['baseline_ms']:.3f}" if (r["baseline_ms"] is not None and r["kind"] == "ours") else "-",
            f"{r['speedup']:.2f}x" if (r["speedup"] is not None and r["kind"] == "ours") else "-",
            f"{r['gb_per_s']:.1f}" if r["gb_per_s"] is not None else "-",
        ]
        if flops:
            line.append(f"{r['gflop_per_s']:.1f}" if r.get("gflop_per_s") is not None else "-")
        if memory:
            line.append(f"{r['peak_extra_MB']:.1f}" if r.get("peak_extra_MB") is not None else "-")
            line.append(f"{r['memory_ratio']:.3f}" if r.get("memory_ratio") is not None else "-")
        if notes:
            line.append(str(r.get("note") or ""))
        lines.append(tuple(line))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line).rstrip() for line in lines]
    return "\n".join(out)


def plot(rows: List[Dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [r for r in rows if r["kind"] == "ours" and r["speedup"]]
    labels = [f"{r['op']} {r['problem']}\n{r['variant']}\nvs {r['baseline']}" for r in ours]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(ours)), 4))
    ax.bar(range(len(ours)), [r["speedup"] for r in ours])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(ours)))
    ax.set_xticklabels(labels, rotation=90, fontsize=6)
    ax.set_yscale("log")  # speedups span 0.5x to 50x
    ax.set_ylabel("speedup over the named baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def bench(
    ops: List[str],
    device: torch.device,
    dtype,
    quick: bool,
    backend: str,
    output: Optional[str],
    plot_path: Optional[str],
    tp_options: Optional[Dict[str, object]] = None,
) -> List[Dict[str, object]]:
    """``tp_options``: {family: keyword arguments of its runner}, e.g. {"tp": :func:`run_tp`'s
    (problems, passes, compile_e3nn, budget_s), "conv": :func:`run_conv`'s (problems, memory),
    "egnn": :func:`run_egnn`'s (graphs, nodes, hidden, layers, memory), "lieconv": :func:`run_lieconv`'s
    (sizes, nbhd, channels, batch, scale_points, scale_modes, memory)}."""
    rows: List[Dict[str, object]] = []
    load_at_start = _loadavg()
    for family in ops:
        extra = (tp_options or {}).get(family, {})
        rows += RUNNERS[family](device, dtype, quick, backend, **extra)
    env = environment(device)
    env["loadavg_at_start"], env["loadavg_at_end"] = load_at_start, env.pop("loadavg")
    result = {"environment": env, "dtype": str(dtype), "quick": quick, "backend": backend, "results": rows}
    if device.type == "cuda":
        result["copy_bandwidth_GBps"] = copy_bandwidth(device) / 1e9
    if output:
        with open(output, "w") as f:
            json.dump(result, f, indent=2)
    print(format_table(rows))
    for r in rows:  # a family's stated goals (egnn, lieconv: the CPU goals)
        for goal, met in (r.get("goals") or {}).items():
            print(f"goal {r['op']} {r['problem']}: {goal}: {'not measured' if met is None else ('met' if met else 'NOT met')}")
    if "copy_bandwidth_GBps" in result:
        print(f"device copy bandwidth (read + write): {result['copy_bandwidth_GBps']:.0f} GB/s")
    if plot_path:
        plot(rows, plot_path)
    return rows
