"""Grading, stage 5: report.csv, summary.csv and report.html, rebuilt from the saved results."""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from ...files import atomic_write
from .verdicts import STATUSES

__all__ = ["load_records", "report_rows", "summary_rows", "write_reports"]

REPORT_FIELDS = ["submission", "exercise", "status", "points", "max_points", "message"]
SUMMARY_FIELDS = ["submission", "status", "score", "max_score", "seconds", "notes"]


def load_records(out: Path) -> list[dict]:
    """The saved records in `out`/results, sorted by submission (unreadable files are skipped)."""
    records = []
    for path in sorted((out / "results").glob("*.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return sorted(records, key=lambda r: r["submission"])


def _csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(x: float) -> str:
    return f"{x:g}"


def summary_rows(records: list[dict]) -> list[dict]:
    """One row per submission: submission, status, score, max_score, seconds, notes."""
    return [{"submission": r["submission"], "status": r["status"],
             "score": _fmt(sum(row["points"] for row in r["rows"])),
             "max_score": _fmt(sum(row["max_points"] for row in r["rows"])), "seconds": r["seconds"],
             "notes": "; ".join(r.get("notes", []))} for r in records]


def report_rows(records: list[dict]) -> list[dict]:
    """One row per submission and exercise."""
    return [{"submission": r["submission"], **row, "points": _fmt(row["points"]), "max_points": _fmt(row["max_points"])}
            for r in records for row in r["rows"]]


_COLORS = {"passed": "#d8f3dc", "failed": "#ffe5d9", "not attempted": "#eeeeee", "completed": "#d8f3dc"}


def _html(records: list[dict], notebook: str) -> str:
    def cell(value, status=None) -> str:
        style = f' style="background:{_COLORS.get(status, "#ffd6d6")}"' if status else ""
        return f"<td{style}>{html.escape(str(value))}</td>"

    summary = summary_rows(records)
    parts = ["<!doctype html><meta charset='utf-8'><title>Grades</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}</style>",
             f"<h1>Grades: {html.escape(notebook)}</h1>",
             "<table><tr>" + "".join(f"<th>{f}</th>" for f in ["submission", "status", "score", "seconds", "notes"])
             + "</tr>"]
    for s in summary:
        link = f"<a href='notebooks/{html.escape(s['submission'])}.ipynb'>{html.escape(s['submission'])}</a>"
        parts.append(f"<tr><td>{link}</td>{cell(s['status'], s['status'])}{cell(s['score'] + ' / ' + s['max_score'])}"
                     f"{cell(s['seconds'])}{cell(s['notes'])}</tr>")
    heads = ["submission", "exercise", "status", "points", "message"]
    parts.append("</table><h2>Exercises</h2><table><tr>" + "".join(f"<th>{f}</th>" for f in heads) + "</tr>")
    for row in report_rows(records):
        parts.append(f"<tr>{cell(row['submission'])}{cell(row['exercise'])}{cell(row['status'], row['status'])}"
                     f"{cell(row['points'] + ' / ' + row['max_points'])}{cell(row['message'])}</tr>")
    parts.append("</table><p>Statuses: " + "; ".join(f"<b>{k}</b>: {v}" for k, v in STATUSES.items()) + ".</p>")
    return "\n".join(parts) + "\n"


def write_reports(out: Path, notebook: str) -> list[dict]:
    """Rebuild report.csv, summary.csv and report.html in `out` from its results folder."""
    records = load_records(out)
    atomic_write(out / "report.csv", _csv(report_rows(records), REPORT_FIELDS))
    atomic_write(out / "summary.csv", _csv(summary_rows(records), SUMMARY_FIELDS))
    atomic_write(out / "report.html", _html(records, notebook))
    return records


