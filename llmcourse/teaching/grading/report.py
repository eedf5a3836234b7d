"""Grading, stage 5: report.csv, summary.csv and report.html, rebuilt from the saved results.

Given the batch's key, a saved record whose signature fails is shown as ``unverified``, with no points, until a rerun
grades it again: what the reports show always comes from the grader.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from ...files import atomic_write
from .signing import verify
from .verdicts import STATUSES

__all__ = ["load_records", "report_rows", "summary_rows", "write_reports"]

REPORT_FIELDS = ["submission", "exercise", "status", "points", "max_points", "message"]
SUMMARY_FIELDS = ["submission", "status", "score", "max_score", "seconds", "isolation", "notes"]


UNVERIFIED = ("the stored result failed its signature check (changed after grading, or graded before results were "
              "signed). Fix: run the grade command again with this submission: it is graded again.")


def load_records(out: Path, key: bytes | None = None) -> list[dict]:
    """The saved records in `out`/results, sorted by submission.

    Without `key`, files that are not records are skipped; with it, every record whose signature fails is shown as
    ``unverified`` with no points.
    """
    records = []
    for path in sorted((out / "results").glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if key is not None and not (verify(record, key) and record.get("submission") == path.stem):
            records.append(_unverified(path.stem, record))
        elif isinstance(record, dict) and isinstance(record.get("submission"), str):
            records.append(record)
    return sorted(records, key=lambda r: r["submission"])


def _unverified(name: str, record: object) -> dict:
    """What the reports show for a stored record that the grader cannot vouch for: its exercises, no points."""
    rows = record.get("rows") if isinstance(record, dict) else None
    shown = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and isinstance(row.get("max_points"), (int, float)):
            shown.append({"exercise": str(row.get("exercise", "?"))[:20], "status": "unverified", "points": 0.0,
                          "max_points": float(row["max_points"]), "message": UNVERIFIED})
    return {"submission": name, "status": "unverified", "seconds": 0.0,
            "notes": ["stored result failed its signature check"], "rows": shown}


def _csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(x: float) -> str:
    return f"{x:g}"


def summary_rows(records: list[dict]) -> list[dict]:
    """One row per submission: submission, status, score, max_score, seconds, isolation (what its kernel ran in),
    notes."""
    return [{"submission": r["submission"], "status": r["status"],
             "score": _fmt(sum(row["points"] for row in r["rows"])),
             "max_score": _fmt(sum(row["max_points"] for row in r["rows"])), "seconds": r["seconds"],
             "isolation": r.get("isolation", "-"), "notes": "; ".join(r.get("notes", []))} for r in records]


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
             "<table><tr>" + "".join(f"<th>{f}</th>" for f in ["submission", "status", "score", "seconds", "isolation",
                                                                        "notes"])
             + "</tr>"]
    for s in summary:
        link = f"<a href='notebooks/{html.escape(s['submission'])}.ipynb'>{html.escape(s['submission'])}</a>"
        parts.append(f"<tr><td>{link}</td>{cell(s['status'], s['status'])}{cell(s['score'] + ' / ' + s['max_score'])}"
                     f"{cell(s['seconds'])}{cell(s['isolation'])}{cell(s['notes'])}</tr>")
    heads = ["submission", "exercise", "status", "points", "message"]
    parts.append("</table><h2>Exercises</h2><table><tr>" + "".join(f"<th>{f}</th>" for f in heads) + "</tr>")
    for row in report_rows(records):
        parts.append(f"<tr>{cell(row['submission'])}{cell(row['exercise'])}{cell(row['status'], row['status'])}"
                     f"{cell(row['points'] + ' / ' + row['max_points'])}{cell(row['message'])}</tr>")
    parts.append("</table><p>Statuses: " + "; ".join(f"<b>{k}</b>: {v}" for k, v in STATUSES.items()) + ".</p>")
    return "\n".join(parts) + "\n"


def write_reports(out: Path, notebook: str, records: list[dict] | None = None) -> list[dict]:
    """Write report.csv, summary.csv and report.html in `out` from `records` (default: its results folder)."""
    records = load_records(out) if records is None else sorted(records, key=lambda r: r["submission"])
    atomic_write(out / "report.csv", _csv(report_rows(records), REPORT_FIELDS))
    atomic_write(out / "summary.csv", _csv(summary_rows(records), SUMMARY_FIELDS))
    atomic_write(out / "report.html", _html(records, notebook))
    return records


