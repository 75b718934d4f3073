"""Markdown and self-contained HTML reports for one run or several runs side by side."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from frugalml._io import atomic_write_bytes, atomic_write_text
from frugalml.report.label_plots import (
    LABEL_COLUMNS,
    has_label_data,
    issue_images,
    label_efficiency_plot,
    label_points,
    label_rows,
)
from frugalml.report.plots import pareto_plot
from frugalml.report.tables import (
    COLUMNS,
    all_warnings,
    candidate_rows,
    env_lines,
    labelled,
    method_lines,
    reference_rows,
    stage_rows,
)
from frugalml.schemas import Results, read_json

REF_COLUMNS = ["stage", "reference runtime", "ref b1 ms", "ref b64 ms", "speedup b1", "speedup b64"]
CAND_COLUMNS = ["stage", "backend", "accuracy", "b1 ms", "b64 ms", "chosen"]


def load_results(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / "results.json", Results, f"{run_dir}: not a frugalml run directory (no results.json)")


def _md_table(cols: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _sections(runs: list[tuple[str, dict]]) -> list[tuple[str, list[str], list[list[str]] | list[str]]]:
    """(title, columns or [], rows or lines) for each section of the report."""
    secs: list = []
    for label, res in runs:
        prefix = f"{label}: " if len(runs) > 1 else ""
        stages = res["stages"]
        secs.append((f"{prefix}stages (each compared with the stage its chain started from; ref = such a stage)",
                     labelled(COLUMNS, stages), stage_rows(stages)))
        refs = reference_rows(stages)
        if refs:
            secs.append((f"{prefix}honest baselines (measured in the same run)", labelled(REF_COLUMNS, stages), refs))
        cands = candidate_rows(stages)
        if cands:
            secs.append((f"{prefix}backend candidates", labelled(CAND_COLUMNS, stages), cands))
        labels = label_rows(stages, res)
        if labels:
            secs.append((f"{prefix}label efficiency (labels the model was trained with)", LABEL_COLUMNS, labels))
        warns = all_warnings(stages)
        if warns:
            secs.append((f"{prefix}warnings", [], warns))
        secs.append((f"{prefix}machine", [], env_lines(res)))
        secs.append((f"{prefix}how these numbers were measured", [], method_lines(stages)))
    return secs


def render_markdown(runs: list[tuple[str, dict]], plots: dict[str, str]) -> str:
    title = runs[0][1].get("recipe", "run") if len(runs) == 1 else "comparison of " + ", ".join(lbl for lbl, _ in runs)
    out = [f"# frugalml report: {title}", ""]
    for sec_title, cols, rows in _sections(runs):
        out += [f"## {sec_title}", ""]
        out.append(_md_table(cols, rows) if cols else "\n".join(f"- {line}" for line in rows))
        out.append("")
    out += ["## plots", ""] + [f"![{k}]({v})" for k, v in plots.items()] + [""]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,td:nth-child(2),th:first-child{text-align:left}
.warn{color:#a40}img{max-width:620px;margin-right:1em}"""


def render_html(runs: list[tuple[str, dict]], plots_png: dict[str, bytes]) -> str:
    title = runs[0][1].get("recipe", "run") if len(runs) == 1 else "comparison of " + ", ".join(lbl for lbl, _ in runs)
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>frugalml: {html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body><h1>frugalml report: {html.escape(title)}</h1>"]
    for sec_title, cols, rows in _sections(runs):
        out.append(f"<h2>{html.escape(sec_title)}</h2>")
        if cols:
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows]
            out.append("</table>")
        else:
            cls = " class='warn'" if "warnings" in sec_title else ""
            out.append(f"<ul{cls}>" + "".join(f"<li>{html.escape(x)}</li>" for x in rows) + "</ul>")
    out.append("<h2>plots</h2><div>")
    for name, png in plots_png.items():
        b64 = base64.b64encode(png).decode()
        out.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>")
    out.append("</div></body></html>")
    return "\n".join(out)


def write_reports(out_dir: str | Path, results: dict | list[tuple[str, dict]]) -> dict[str, Path]:
    """Write report.md, report.html and the plot PNGs into out_dir. Returns their paths."""
    out_dir = Path(out_dir)
    runs = [(results.get("recipe", "run"), results)] if isinstance(results, dict) else results
    pngs = {
        "accuracy-vs-latency": pareto_plot([(lbl, r["stages"]) for lbl, r in runs], "latency"),
        "accuracy-vs-size": pareto_plot([(lbl, r["stages"]) for lbl, r in runs], "size"),
    }
    if has_label_data(runs):
        pngs["accuracy-vs-labels"] = label_efficiency_plot(label_points(runs))
    if len(runs) == 1:  # label-issue grids the stages drew, shown with the run's own report
        for name, rel in issue_images(runs[0][1]).items():
            if (out_dir / rel).is_file():
                pngs[name] = (out_dir / rel).read_bytes()
    paths = {}
    for name, png in pngs.items():
        paths[name] = out_dir / f"{name}.png"
        atomic_write_bytes(paths[name], png)
    paths["md"] = out_dir / "report.md"
    atomic_write_text(paths["md"], render_markdown(runs, {k: f"{k}.png" for k in pngs}))
    paths["html"] = out_dir / "report.html"
    atomic_write_text(paths["html"], render_html(runs, pngs))
    return paths
