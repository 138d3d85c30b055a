"""Regenerate the README's performance table from benchmarks/results/*.json.

    python benchmarks/make_readme_table.py

Each JSON is the output of `python -m equiops bench --output ...` (or gpu_check.sh).
The table lists, per results file, our variants with their median time, the baseline's
and the speedup; absolute times only mean something next to their own baseline.
"""

import glob
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"


def table_for(path: str) -> str:
    data = json.load(open(path))
    env = data["environment"]
    where = env.get("gpu") or f"CPU, {env['threads']} threads"
    lines = [
        f"**{os.path.basename(path)}**: {where}, torch {env['torch']}, {data['dtype']}, "
        f"backend {data.get('backend', 'auto')}, commit {env.get('commit')}",
        "",
        "| problem | ours | ms | baseline | ms | speedup |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["results"]:
        if r["kind"] != "ours" or r["median_ms"] is None or r["baseline_ms"] is None:
            continue
        lines.append(
            f"| {r['op']} {r['problem']} | {r['variant']} | {r['median_ms']:.2f} | {r['baseline']} | "
            f"{r['baseline_ms']:.2f} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    files = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "results", "*.json")))
    body = "\n\n".join(table_for(f) for f in files) or "No results yet."
    readme = os.path.join(ROOT, "README.md")
    text = open(readme).read()
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), START + "\n" + body + "\n" + END, text, flags=re.S)
    open(readme, "w").write(new)


if __name__ == "__main__":
    main()
