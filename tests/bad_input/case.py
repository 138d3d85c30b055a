"""One row of the bad-input audit (docs/BAD_INPUT.md is generated from these rows).

A row is a piece of code that calls one public entry point with one kind of bad input.
It runs in a separate worker process (see ``runner.py``): it must raise ``raises`` with a
message matching ``match`` (a regular expression, searched); returning normally, raising
anything else, or killing the process (a segfault, an abort, a hang past the timeout)
fails the row.

``entry`` is a dotted name that resolves by import + getattr (``equiops.Graph``,
``equiops.Graph.aggregate``, ``torch.ops.equiops.scatter_sum``): the completeness test
counts a row for every prefix of it that is a public entry point. A ``cases_*.py``
module may also define ``EXEMPT: dict[str, str]`` (entry point -> why it takes no
checkable input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Type


@dataclass(frozen=True)
class Case:
    id: str             # unique, e.g. "scatter/index-out-of-range"; pytest uses it as the test id
    entry: str          # the public entry point as users write it, e.g. "equiops.scatter"
    kind: str           # one of KINDS
    what: str           # the bad input in words, for the docs table
    code: str           # Python source; runs with `torch` and `equiops` imported; must raise
    raises: Type[BaseException]
    match: str          # regex the message must contain (names the argument, expected, actual)
    setup: str = ""     # optional Python source run first (imports, building a module)
    xfail: str = ""     # a known bug (reported, not yet fixed): the reason; the row is a strict xfail


# The columns of the audit: what each row breaks.
KINDS = ("shape", "dtype", "device", "index", "irreps", "value", "type", "option")
