"""Regenerate the README's performance tables from benchmarks/results/*.json.

    python benchmarks/make_readme_table.py

Each JSON is the output of `python -m equiops bench --output ...` (or gpu_check.sh).
CPU and GPU results get separate sections; each table is labelled with its device,
thread count, date and commit, and lists our variants with their median time, the
baseline's and the speedup (absolute times only mean something next to their own
baseline). Results recorded before the JSON carried a date take the file's last
commit date.
"""

import glob
import json
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"


def _date(path: str, env) -> str:
    if env.get("date"):
        return env["date"]
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs", "--", path], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "undated"
    except OSError:
        return "undated"


def table_for(path: str) -> str:
    data = json.load(open(path))
    env = data["environment"]
    where = env.get("gpu") or f"CPU, {env['threads']} threads"
    lines = [
        f"**{os.path.basename(path)}**: {where}, {_date(path, env)}, torch {env['torch']}, {data['dtype']}, "
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
    sections = {"CPU": [], "GPU": []}
    for f in files:
        gpu = json.load(open(f))["environment"].get("gpu")
        sections["GPU" if gpu else "CPU"].append(table_for(f))
    body = []
    for name, tables in sections.items():
        body.append(f"#### {name}")
        body.append("\n\n".join(tables) if tables else f"No {name} results yet.")
    readme = os.path.join(ROOT, "README.md")
    text = open(readme).read()
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: START + "\n" + "\n\n".join(body) + "\n" + END, text, flags=re.S)
    open(readme, "w").write(new)


if __name__ == "__main__":
    main()
