"""Writes docs/BAD_INPUT.md, the bad-input audit table, from tests/bad_input/cases_*.py.

    python scripts/gen_bad_input_doc.py          # rewrite the file
    python scripts/gen_bad_input_doc.py --check  # exit 1 if it is stale

The output depends only on the rows (module order, then row order), so it is
deterministic; tests/test_bad_input_audit.py checks that the file is current.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "BAD_INPUT.md"

INTRO = """\
# Bad-input audit

Every public entry point of equiops (the top-level API, `equiops.nn`, `equiops.lie`, the
op-level functions and every raw `torch.ops.equiops.*` operator) is called with wrong
shapes, dtypes, devices, index ranges, irreps, option values and Python types, and must
raise a clear error: the exception type below, with a message naming the argument, what
was expected and what was given. No input may crash the process, hang, or return a
silent result (for example a `meta` tensor from mixed-device inputs).

How the rows run: each row is a `Case` in `tests/bad_input/cases_*.py`.
`tests/test_bad_input_audit.py` (one test per row, the row id is the test id) sends the
rows to a persistent worker process (`tests/bad_input/runner.py`); a row fails if it
returns normally, raises another type, its message does not match, or the worker dies
(segfault, abort) or does not answer within the timeout; a fresh worker then runs the
next rows. Rows marked *xfail* are known bugs (strict xfail: they fail the suite once
fixed, so the mark must be removed). The test also checks that every public entry
point has at least one row.

Regenerate this file after changing the rows:

```bash
python scripts/gen_bad_input_doc.py
```

The "message contains" column is the row's regular expression in readable form
(`…` stands for any text).
"""


def readable(pattern: str) -> str:
    """A regular expression as text a reader can scan: escapes removed, wildcards as …"""
    text = pattern
    text = re.sub(r"\.\*\??|\.\+\??", "…", text)
    text = text.replace(r"\d+", "<n>").replace(r"\d", "<digit>").replace(r"\s+", " ").replace(r"\s", " ")
    text = re.sub(r"\\(.)", r"\1", text)
    return text.strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def render(cases) -> str:
    groups = {}
    for c in cases:
        groups.setdefault(c.entry, []).append(c)
    lines = [INTRO, f"{len(cases)} rows, {len(groups)} entry points.", ""]
    lines += ["| entry | bad input | kind | raises | message contains |", "|---|---|---|---|---|"]
    for entry, rows in groups.items():
        for i, c in enumerate(rows):
            name = f"`{entry}`" if i == 0 else ""
            what = _cell(c.what) + (f" (*xfail: {_cell(c.xfail)}*)" if getattr(c, "xfail", "") else "")
            raises = c.raises.__qualname__ if c.raises.__module__ == "builtins" else f"{c.raises.__module__}.{c.raises.__qualname__}"
            lines.append(f"| {name} | {what} | {c.kind} | {raises} | `{_cell(readable(c.match))}` |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/BAD_INPUT.md is stale")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from bad_input.runner import all_cases

    text = render(all_cases())
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python scripts/gen_bad_input_doc.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
