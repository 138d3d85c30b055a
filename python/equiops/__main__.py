"""Command line: ``python -m equiops bench ...`` and ``python -m equiops info``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import List, Optional

import torch


def info() -> int:
    import equiops
    from equiops import _extension, backend

    print(f"equiops {equiops.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"  C++ CPU kernels : {'yes' if _extension.available() else 'no: ' + _extension.why_unavailable()}")
    cuda_built = _extension.with_cuda()
    print(f"  CUDA kernels    : {'built' if cuda_built else 'no: ' + _extension.why_no_cuda()}")
    if torch.cuda.is_available():
        print(f"  GPU             : {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    else:
        print("  GPU             : none visible to torch")
    try:
        import triton

        print(f"  Triton          : {triton.__version__}" + ("" if torch.cuda.is_available() else " (needs a GPU; interpreter only here)"))
    except ImportError:
        print(f"  Triton          : no: {backend.why_no_triton()}")
    try:
        import cupy

        print(f"  CuPy            : {cupy.__version__}")
    except Exception as exc:  # cupy raises various errors without a GPU or driver
        print(f"  CuPy            : no: {type(exc).__name__}: {exc}")
    print(f"  default backend : {backend.get_backend()}, deterministic: {backend.is_deterministic()}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Errors as one line (no usage block) and exit status 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: Optional[List[str]] = None) -> int:
    from equiops.bench import runner

    parser = _Parser(prog="python -m equiops")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="check each op against its baseline, then time both")
    b.add_argument("--quick", action="store_true", help="smaller problems (under 2 minutes on 2 CPU cores)")
    b.add_argument("--ops", default=",".join(runner.FAMILIES), help=f"comma-separated families from {runner.FAMILIES}")
    b.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    b.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    b.add_argument("--backend", default="auto", help="equiops backend for our ops (auto, cpu, cuda, triton, torch)")
    b.add_argument("--threads", type=int, default=None, help="CPU threads for both sides (default: torch's)")
    b.add_argument("--output", default=None, help="write results and environment as JSON")
    b.add_argument("--plot", default=None, help="draw a bar chart of speedups (PNG, needs matplotlib)")
    b.add_argument("--tp-problems", default=None, help="tp: comma-separated problem names (default: all)")
    b.add_argument("--tp-passes", default=None, help="tp: comma-separated from forward, backward, double (default: all)")
    b.add_argument("--tp-compile-e3nn", default="auto", choices=("auto", "on", "off"),
                   help="tp: also time e3nn under torch.compile (auto: on CUDA only)")
    b.add_argument("--tp-budget", type=float, default=None,
                   help="tp: start no new problem after this many seconds (the rest are listed as skipped)")
    b.add_argument("--conv-problems", default=None, help="conv: comma-separated problem names (default: all)")
    b.add_argument("--conv-memory", default="on", choices=("on", "off"),
                   help="conv: also measure each call's peak extra memory (CPU: a process per candidate)")
    b.add_argument("--egnn-graphs", type=int, default=None, help="egnn: graphs in the batch (default 60; 16 with --quick)")
    b.add_argument("--egnn-nodes", type=int, default=None, help="egnn: nodes per fully connected graph (default 30)")
    b.add_argument("--egnn-hidden", type=int, default=None, help="egnn: hidden features H (default 64)")
    b.add_argument("--egnn-layers", type=int, default=None, help="egnn: layers (default 4)")
    b.add_argument("--egnn-memory", default="on", choices=("on", "off"),
                   help="egnn: also measure each call's peak extra memory (CPU: a process per candidate)")
    b.add_argument("--lieconv-sizes", default=None,
                   help="lieconv: comma-separated points per cloud of the layer rows (default 1000,4000; 500,1000 with --quick)")
    b.add_argument("--lieconv-nbhd", type=int, default=None, help="lieconv: neighbourhood size (default 16)")
    b.add_argument("--lieconv-channels", type=int, default=None, help="lieconv: layer channels chin = chout (default 32)")
    b.add_argument("--lieconv-batch", type=int, default=None, help="lieconv: clouds per batch of the layer rows (default 1)")
    b.add_argument("--lieconv-scale-points", type=int, default=None,
                   help="lieconv: points of the LieResNet scale rows (default 20000; 2000 with --quick; 0: none)")
    b.add_argument("--lieconv-scale-modes", default=None,
                   help="lieconv: neighbourhoods of the scale rows, comma-separated from knn, ball (default both)")
    b.add_argument("--lieconv-memory", default="on", choices=("on", "off"),
                   help="lieconv: also measure each call's peak extra memory (CPU: a process per candidate)")
    sub.add_parser("info", help="which backends are built and usable, and why not")
    args = parser.parse_args(argv)

    if args.command == "info":
        return info()
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in ops if o not in runner.FAMILIES]
    if unknown:
        parser.error(f"--ops: {unknown} not available yet; choose from {runner.FAMILIES}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch")
    from equiops import _extension, backend as _backend

    if args.backend not in _backend.BACKENDS:
        parser.error(f"--backend must be one of {_backend.BACKENDS}, got {args.backend!r}")
    if args.backend == "cuda" and not _extension.with_cuda():
        parser.error(f"--backend cuda: the CUDA kernels are not built ({_extension.why_no_cuda()})")
    if args.backend in ("cuda", "triton") and device.type != "cuda":
        parser.error(f"--backend {args.backend} runs on CUDA tensors; add --device cuda")
    for path in (args.output, args.plot):
        if path and not _writable(path):
            parser.error(f"cannot write {path!r} (missing folder or no permission)")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib (pip install matplotlib)")
    tp_options = {"tp": _tp_options(parser, args), "conv": _conv_options(parser, args), "egnn": _egnn_options(parser, args),
                  "lieconv": _lieconv_options(parser, args)}
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    try:
        rows = runner.bench(ops, device, dtype, args.quick, args.backend, args.output, args.plot, tp_options)
    except Exception as exc:  # one line for the user; EQUIOPS_DEBUG=1 shows the traceback
        if os.environ.get("EQUIOPS_DEBUG") == "1":
            raise
        print(f"equiops bench: error: {type(exc).__name__}: {exc} (EQUIOPS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    # pass None: a baseline that could not be built or run (reported, not a failure).
    return 0 if all(r["pass"] is not False for r in rows) else 1


def _tp_options(parser, args) -> dict:
    from equiops.bench import tensor_product as tp_bench

    options = {}
    if args.tp_problems:
        names = [n.strip() for n in args.tp_problems.split(",") if n.strip()]
        unknown = [n for n in names if n not in tp_bench.NAMES]
        if unknown:
            parser.error(f"--tp-problems: {unknown} unknown; choose from {tp_bench.NAMES}")
        options["problems"] = names
    if args.tp_passes:
        alias = {"forward": "forward", "backward": "backward", "double": "force", "force": "force"}
        names = [n.strip() for n in args.tp_passes.split(",") if n.strip()]
        unknown = [n for n in names if n not in alias]
        if unknown or not names:
            parser.error(f"--tp-passes: {unknown or names} unknown; choose from forward, backward, double")
        options["passes"] = [alias[n] for n in names]
    if args.tp_compile_e3nn != "auto":
        options["compile_e3nn"] = args.tp_compile_e3nn == "on"
    if args.tp_budget is not None:
        if args.tp_budget <= 0:
            parser.error("--tp-budget must be a positive number of seconds")
        options["budget_s"] = args.tp_budget
    return options


def _conv_options(parser, args) -> dict:
    from equiops.bench import tp_conv as conv_bench

    options = {"memory": args.conv_memory == "on"}
    if args.conv_problems:
        names = [n.strip() for n in args.conv_problems.split(",") if n.strip()]
        unknown = [n for n in names if n not in conv_bench.NAMES]
        if unknown:
            parser.error(f"--conv-problems: {unknown} unknown; choose from {conv_bench.NAMES}")
        options["problems"] = names
    return options


def _egnn_options(parser, args) -> dict:
    options = {"memory": args.egnn_memory == "on"}
    for name, least in (("graphs", 1), ("nodes", 2), ("hidden", 1), ("layers", 1)):
        value = getattr(args, "egnn_" + name)
        if value is not None:
            if value < least:
                parser.error(f"--egnn-{name} must be at least {least}, got {value}")
            options[name] = value
    return options


def _lieconv_options(parser, args) -> dict:
    options = {"memory": args.lieconv_memory == "on"}
    if args.lieconv_sizes is not None:
        try:
            sizes = [int(v) for v in args.lieconv_sizes.split(",") if v.strip()]
        except ValueError:
            parser.error(f"--lieconv-sizes: expected comma-separated integers, got {args.lieconv_sizes!r}")
        if not sizes or min(sizes) < 2:
            parser.error(f"--lieconv-sizes: expected integers of at least 2, got {args.lieconv_sizes!r}")
        options["sizes"] = sizes
    for name, least in (("nbhd", 1), ("channels", 1), ("batch", 1), ("scale_points", 0)):
        value = getattr(args, "lieconv_" + name)
        if value is not None:
            if value < least:
                parser.error(f"--lieconv-{name.replace('_', '-')} must be at least {least}, got {value}")
            options[name] = value
    if args.lieconv_scale_modes is not None:
        modes = [m.strip() for m in args.lieconv_scale_modes.split(",") if m.strip()]
        unknown = [m for m in modes if m not in ("knn", "ball")]
        if unknown or not modes:
            parser.error(f"--lieconv-scale-modes: {unknown or modes} unknown; choose from knn, ball")
        options["scale_modes"] = modes
    return options


def _writable(path: str) -> bool:
    """Whether ``path`` can be created or overwritten (checked before the long run)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path):
        return os.path.isfile(path) and os.access(path, os.W_OK)
    return os.path.isdir(folder) and os.access(folder, os.W_OK)


if __name__ == "__main__":
    sys.exit(main())
