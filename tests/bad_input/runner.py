"""Runs bad-input rows in a persistent worker process, so that a crash is a failure.

The parent (pytest) starts one worker (``Worker``) and sends it one request per line on
its stdin: a case id (looked up among the discovered rows) or a JSON object with ``id``,
``setup`` and ``code`` (rows the harness tests make up). The worker runs ``setup`` then
``code`` in a fresh namespace holding ``torch`` and ``equiops`` and answers one JSON line:
what was raised (module, qualified name, the names of its classes, the message) or that
the code returned normally. If the worker dies (a segfault, an abort, ``os._exit``) or
does not answer within the timeout, the parent reports the exit status, signal or hang
with the tail of the worker's stderr, and starts a fresh worker for the next request.

Discovery: every ``cases_*.py`` module of this package defines ``CASES`` (a list of
``Case``) and may define ``EXEMPT`` (entry point -> reason); ids must be unique.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .case import KINDS, Case

HERE = Path(__file__).resolve().parent
TESTS_DIR = HERE.parent
DEFAULT_TIMEOUT = 120.0


# ------------------------------------------------------------------------ discovery
def case_modules() -> List[str]:
    """The row modules, sorted by name (so the docs table is deterministic)."""
    return sorted(p.stem for p in HERE.glob("cases_*.py"))


def discover() -> Tuple[List[Case], Dict[str, str]]:
    """Every row of every ``cases_*.py`` (module order, then row order) and the merged
    ``EXEMPT`` dicts. Raises ``ValueError`` on a duplicate id or an unknown kind."""
    cases: List[Case] = []
    exempt: Dict[str, str] = {}
    seen: Dict[str, str] = {}
    for name in case_modules():
        mod = importlib.import_module(f"{__package__}.{name}")
        for case in getattr(mod, "CASES"):
            if not isinstance(case, Case):
                raise TypeError(f"{name}.CASES holds a {type(case).__name__}, not a Case")
            if case.id in seen:
                raise ValueError(f"duplicate bad-input case id {case.id!r} (in {seen[case.id]} and {name})")
            if case.kind not in KINDS:
                raise ValueError(f"case {case.id!r}: kind {case.kind!r} is not one of {KINDS}")
            seen[case.id] = name
            cases.append(case)
        exempt.update(getattr(mod, "EXEMPT", {}))
    return cases, exempt


def all_cases() -> List[Case]:
    return discover()[0]


# --------------------------------------------------------------------------- worker
def _describe(value) -> str:
    """A short description of what a row returned (to show a silent meta result)."""
    import torch

    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) for v in value[:4])
        return f"{type(value).__name__}({inner}{', ...' if len(value) > 4 else ''})"
    text = repr(value)
    return text if len(text) < 200 else text[:200] + "..."


def _reset_global_state(torch, equiops) -> None:
    """Undo what a row may have changed in the process (the backend default, the
    deterministic switch, torch's default dtype), so rows do not leak into each other."""
    from equiops import backend as be

    be._default.update(backend="auto", deterministic=False)
    for key in ("backend", "deterministic"):
        if hasattr(be._state, key):
            delattr(be._state, key)
    torch.set_default_dtype(torch.float32)


def _run_one(request: dict, torch, equiops) -> dict:
    import traceback

    answer = {"id": request["id"]}
    ns = {"torch": torch, "equiops": equiops, "__name__": "__bad_input_case__"}
    stage = "setup"
    try:
        if request.get("setup"):
            exec(compile(request["setup"], f"<{request['id']} setup>", "exec"), ns)
        stage = "code"
        # An expression's value is reported if it returns (to show e.g. a meta result).
        name = f"<{request['id']}>"
        try:
            compiled, is_expr = compile(request["code"], name, "eval"), True
        except SyntaxError:
            compiled, is_expr = None, False
        if is_expr:
            answer.update(outcome="returned", value=_describe(eval(compiled, ns)))
        else:
            exec(compile(request["code"], name, "exec"), ns)
            answer.update(outcome="returned", value="None")
    except BaseException as exc:  # noqa: BLE001  (SystemExit and KeyboardInterrupt are answers too)
        cls = type(exc)
        answer.update(
            outcome="raised" if stage == "code" else "setup_error",
            module=cls.__module__,
            qualname=cls.__qualname__,
            mro=[f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__],
            message=str(exc),
            traceback="".join(traceback.format_exception(cls, exc, exc.__traceback__)[-6:]),
        )
    finally:
        _reset_global_state(torch, equiops)
    return answer


def worker_main() -> None:
    """The worker's loop: one request per stdin line, one JSON answer per stdout line.
    The answers go to a private copy of stdout; fd 1 goes to stderr, so a row that prints
    cannot corrupt the protocol."""
    import faulthandler

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    import torch

    # As in tests/conftest.py: Triton runs under its interpreter without a GPU; set
    # before anything imports triton (equiops may).
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import equiops

    by_id: Optional[Dict[str, Case]] = None
    proto.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            request = json.loads(line)
        else:
            if by_id is None:
                by_id = {c.id: c for c in all_cases()}
            case = by_id[line]
            request = {"id": case.id, "setup": case.setup, "code": case.code}
        print(f"--- bad-input row {request['id']}", file=sys.stderr, flush=True)
        proto.write(json.dumps(_run_one(request, torch, equiops)) + "\n")


# --------------------------------------------------------------------------- parent
@dataclass
class Result:
    """What happened to one row. ``outcome``: raised, returned, setup_error, crashed, hung."""

    id: str
    outcome: str
    module: str = ""
    qualname: str = ""
    mro: Tuple[str, ...] = ()
    message: str = ""
    detail: str = ""  # the returned value, the traceback, or how the worker died

    @property
    def type_name(self) -> str:
        return f"{self.module}.{self.qualname}"


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Worker:
    """A persistent worker process; restarted after a crash or a hang."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        self.timeout = timeout
        self.proc: Optional[subprocess.Popen] = None
        self._stderr = None
        self._buf = b""
        self.starts = 0

    # -- process management
    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONFAULTHANDLER"] = "1"
        if not _parent_has_cuda():
            env.setdefault("TRITON_INTERPRET", "1")
        self._stderr = tempfile.TemporaryFile()
        boot = (
            "import sys; sys.path.insert(0, %r); "
            "from bad_input.runner import worker_main; worker_main()" % str(TESTS_DIR)
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, env=env, cwd=str(TESTS_DIR.parent),
        )
        self._buf = b""
        self.starts += 1
        hello = self._read_line(max(self.timeout, 120.0))
        if hello is None or "ready" not in hello:
            why = self._death()
            self.close()
            raise RuntimeError(f"the bad-input worker did not start: {why}")

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        self.proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _stderr_tail(self, n: int = 3000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        return text[-n:]

    def _death(self) -> str:
        if self.proc is None:
            return "no worker"
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "the worker closed its output but did not exit"
        return f"{_signal_name(rc)}; worker stderr (tail):\n{self._stderr_tail()}"

    def _read_line(self, timeout: float) -> Optional[dict]:
        """The next JSON line, or None on EOF or timeout (``self._hung`` tells which)."""
        self._hung = False
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self._hung = True
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    # -- running rows
    def run(self, case, timeout: Optional[float] = None) -> Result:
        """Run a row: a ``Case`` of the discovered set (sent by id), or any object with
        ``id``, ``code`` and ``setup`` (sent whole)."""
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()
        request = case.id if _is_registered(case) else json.dumps({"id": case.id, "setup": case.setup, "code": case.code})
        try:
            self.proc.stdin.write((request + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        limit = self.timeout if timeout is None else timeout
        answer = self._read_line(limit)
        if answer is None:
            if self._hung:
                detail = f"no answer within {limit:g} s (a hang); worker stderr (tail):\n{self._stderr_tail()}"
                self.close()
                return Result(case.id, "hung", detail=detail)
            detail = self._death()
            self.close()
            return Result(case.id, "crashed", detail=detail)
        if answer.get("id") != case.id:
            self.close()
            return Result(case.id, "crashed", detail=f"the worker answered for {answer.get('id')!r}")
        return Result(
            case.id, answer["outcome"], answer.get("module", ""), answer.get("qualname", ""),
            tuple(answer.get("mro", ())), answer.get("message", ""),
            answer.get("value", "") or answer.get("traceback", ""),
        )


_REGISTERED: Optional[Dict[str, Case]] = None


def _is_registered(case) -> bool:
    """Whether ``case`` is a discovered row (sent by id); anything else is sent whole."""
    global _REGISTERED
    if not isinstance(case, Case):
        return False
    if _REGISTERED is None:
        _REGISTERED = {c.id: c for c in all_cases()}
    return _REGISTERED.get(case.id) == case


def _parent_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# -------------------------------------------------------------------------- checking
def _import_class(module: str, qualname: str):
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def check(case, result: Result) -> Optional[str]:
    """None if the row raised what it should, else why it failed (in words)."""
    want = f"{case.raises.__module__}.{case.raises.__qualname__}"
    head = f"{case.entry}: {case.what}:"
    if result.outcome == "crashed":
        return f"{head} the process died ({result.detail})"
    if result.outcome == "hung":
        return f"{head} {result.detail}"
    if result.outcome == "returned":
        return f"{head} returned normally ({result.detail}) instead of raising {want}"
    if result.outcome == "setup_error":
        return f"{head} the row's setup raised {result.type_name}: {result.message}\n{result.detail}"
    try:
        is_sub = issubclass(_import_class(result.module, result.qualname), case.raises)
    except (ImportError, AttributeError):
        is_sub = want in result.mro
    if not is_sub:
        return f"{head} raised {result.type_name}: {result.message!r}, expected {want}\n{result.detail}"
    if not re.search(case.match, result.message):
        return f"{head} raised {result.type_name} as expected, but {case.match!r} is not in {result.message!r}"
    return None


def main(argv: List[str]) -> int:
    """Run the rows whose id starts with one of ``argv`` (all without arguments) and print
    each outcome: ``cd tests && python -m bad_input.runner scatter/ op.``"""
    failed = 0
    with Worker() as w:
        for c in all_cases():
            if not argv or any(c.id.startswith(x) for x in argv):
                why = check(c, w.run(c))
                failed += why is not None
                print(c.id, "ok" if why is None else f"FAILED: {why}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
