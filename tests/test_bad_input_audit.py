"""The bad-input audit (docs/BAD_INPUT.md): every row of tests/bad_input/cases_*.py runs
in a persistent worker process and must raise its exception type with a message matching
its pattern; returning normally, another exception, a crash of the process (segfault,
abort) or a hang fails the row. Also: the harness itself reports crashes, hangs and
normal returns as failures and restarts its worker; ids are unique; every public entry
point has a row (or an exemption with a reason); the generated docs table is current.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bad_input.case import KINDS, Case
from bad_input.runner import Worker, _signal_name, check, discover

ROOT = Path(__file__).resolve().parents[1]
CASES, CASE_EXEMPT = discover()

# Public entry points without a checkable input (core API). Case modules add their own
# through an ``EXEMPT`` dict.
EXEMPT = {
    "equiops.get_backend": "takes no arguments",
    "equiops.is_deterministic": "takes no arguments",
}


@pytest.fixture(scope="module")
def worker():
    with Worker() as w:
        yield w


def _param(case: Case):
    marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_row(worker, case):
    failure = check(case, worker.run(case))
    if failure is not None:
        pytest.fail(failure, pytrace=False)


# ----------------------------------------------------------------------- the harness
def _inline(code, raises=ValueError, match="x", setup=""):
    return SimpleNamespace(id=f"harness/{abs(hash(code))}", entry="harness", what="harness row",
                           code=code, setup=setup, raises=raises, match=match)


def test_harness_reports_crash_hang_return_and_restarts(worker):
    """A segfault, a hang and a normal return all fail their row with what happened; the
    worker is replaced after each death and later rows still pass. (Uses the shared worker:
    each death costs one start of a fresh worker.)"""
    ok = _inline("raise ValueError('bad x: expected 3, got 4')", match=r"expected 3, got 4")
    assert check(ok, worker.run(ok)) is None
    first, starts = worker.pid, worker.starts

    segv = _inline("import ctypes\nctypes.string_at(0)")
    r = worker.run(segv)
    assert r.outcome == "crashed" and "killed by signal SIGSEGV" in check(segv, r), r
    assert "Fatal Python error" in r.detail  # the worker's faulthandler output comes along
    assert check(ok, worker.run(ok)) is None and worker.pid != first  # a fresh worker

    hang = _inline("import time\ntime.sleep(600)")
    second = worker.pid
    r = worker.run(hang, timeout=1.5)
    assert r.outcome == "hung" and "no answer within 1.5 s" in check(hang, r)
    assert check(ok, worker.run(ok)) is None and worker.pid != second
    assert worker.starts == starts + 2

    ret = _inline("torch.zeros(2, device='meta')")
    msg = check(ret, worker.run(ret))
    assert "returned normally" in msg and "device=meta" in msg
    stmt = _inline("y = 1")
    assert "returned normally" in check(stmt, worker.run(stmt))
    wrong_type = _inline("raise TypeError('x')", raises=ValueError)
    assert "expected builtins.ValueError" in check(wrong_type, worker.run(wrong_type))
    wrong_msg = _inline("raise ValueError('something else')", match=r"expected 3")
    assert "is not in" in check(wrong_msg, worker.run(wrong_msg))
    bad_setup = _inline("raise ValueError('x')", setup="raise KeyError('setup broke')")
    assert "setup raised builtins.KeyError" in check(bad_setup, worker.run(bad_setup))
    # printing to stdout does not corrupt the protocol; subclasses are accepted
    sub = _inline("print('noise')\nraise IndexError('x out of range')", raises=LookupError, match="out of range")
    assert check(sub, worker.run(sub)) is None
    # a row's change of process state does not leak into the next row
    leak = _inline("equiops.set_backend('torch')\ntorch.set_default_dtype(torch.float64)\nraise ValueError('x')")
    assert check(leak, worker.run(leak)) is None
    probe = _inline("raise ValueError(f'{equiops.get_backend()} {torch.get_default_dtype()}')",
                    match=r"^auto torch.float32$")
    assert check(probe, worker.run(probe)) is None
    assert worker.starts == starts + 2


def test_exit_status_wording():
    """How a dead worker is described (os._exit / sys.exit codes and signals)."""
    assert _signal_name(3) == "exited with status 3"
    assert _signal_name(-11) == "killed by signal SIGSEGV"
    assert _signal_name(-6) == "killed by signal SIGABRT"


def test_rows_are_well_formed():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    for c in CASES:
        assert c.kind in KINDS, c.id
        assert c.what and c.match and c.entry, c.id
        assert issubclass(c.raises, BaseException), c.id
        compile(c.code, c.id, "exec")
        compile(c.setup, c.id, "exec")


def test_duplicate_ids_are_rejected(monkeypatch):
    import bad_input.runner as runner

    monkeypatch.setattr(runner, "case_modules", lambda: ["cases_core", "cases_core"])
    with pytest.raises(ValueError, match="duplicate bad-input case id"):
        runner.discover()


# ---------------------------------------------------------------------- completeness
def _resolve(name):
    """The object a dotted name denotes (longest importable module prefix, then getattr)."""
    parts = name.split(".")
    if parts[:3] == ["torch", "ops", "equiops"]:
        return getattr(torch.ops.equiops, parts[3]) if len(parts) > 3 else None
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(name)


def _op_names():
    """Every operator of the equiops library (after importing all the op modules)."""
    for mod in ("equiops.ops.egnn", "equiops.ops.pointconv", "equiops.lie", "equiops.nn"):
        importlib.import_module(mod)
    return sorted({s.name.split("::", 1)[1].split(".")[0] for s in torch._C._jit_get_all_schemas()
                   if s.name.startswith("equiops::")})


def public_entry_points():
    import equiops.lie
    import equiops.nn

    names = [f"equiops.{n}" for n in equiops.__all__]
    names += [f"equiops.nn.{n}" for n in equiops.nn.__all__]
    names += ["equiops.nn.egnn_pytorch.EGNN", "equiops.nn.egnn_pytorch.EGNN_Network"]
    names += [f"equiops.lie.{n}" for n in equiops.lie.__all__  # the groups (not their abstract base)
              if inspect.isclass(getattr(equiops.lie, n)) and issubclass(getattr(equiops.lie, n), equiops.lie.LieGroup)
              and getattr(equiops.lie, n) is not equiops.lie.LieGroup]
    names += ["equiops.ops.egnn.egnn_message", "equiops.ops.pointconv.pointconv"]
    names += ["equiops.so3.wigner_3j", "equiops.so3.wigner_D"]
    out = {}
    for n in names:
        obj = _resolve(n)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            out[n] = obj
    out.update({f"torch.ops.equiops.{op}": getattr(torch.ops.equiops, op) for op in _op_names()})
    return out


def test_every_public_entry_point_has_a_row():
    exempt = {**EXEMPT, **CASE_EXEMPT}
    covered_names, covered_ids = set(), set()
    for c in CASES:
        parts = c.entry.split(".")
        for i in range(2, len(parts) + 1):
            prefix = ".".join(parts[:i])
            covered_names.add(prefix)
            try:
                covered_ids.add(id(_resolve(prefix)))
            except (ImportError, AttributeError):
                pass
    entries = public_entry_points()
    assert len(entries) > 60
    missing = [n for n, obj in entries.items()
               if n not in exempt and n not in covered_names and id(obj) not in covered_ids]
    assert not missing, f"public entry points without a bad-input row (add one, or an EXEMPT reason): {missing}"
    stale = sorted(set(exempt) - set(entries))
    assert not stale, f"EXEMPT names no public entry point: {stale}"


def test_row_entries_resolve():
    for c in CASES:
        _resolve(c.entry)  # an AttributeError / ImportError names the bad row's entry


# ---------------------------------------------------------------------------- docs
def test_docs_table_is_current():
    spec = importlib.util.spec_from_file_location("gen_bad_input_doc", ROOT / "scripts" / "gen_bad_input_doc.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = gen.render(CASES)
    path = ROOT / "docs" / "BAD_INPUT.md"
    actual = path.read_text() if path.exists() else ""
    assert actual == expected, "docs/BAD_INPUT.md is stale: run `python scripts/gen_bad_input_doc.py`"
