"""The gradebook of a graded class: gradebook.csv (one row per student), grades.md (the class at a
glance: table, accuracy histogram, leaderboard, rule failures), feedback/<student>.md and, with a
roster, gradebook-canvas.csv (Canvas's gradebook import).

Rows are netspec.grading.row.GradeRow objects (that layer sits above this one), read by their
attributes; a row's dict (`GradeRow.to_dict()`) is read through the same names."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from netspec.report.escape import csv_cell, md_text
from netspec.runner.rundir import atomic_write

FEEDBACK = "feedback"
HISTOGRAM = "grades-accuracy.png"
STATUS_TEXT = {
    "graded": "graded",
    "invalid": "spec not valid",
    "rules": "breaks a rule (not trained)",
    "missing": "no spec",
    "time limit": "over the time limit",
    "memory limit": "over the memory limit",
    "error": "could not be measured",
    "not graded": "not graded yet",
}


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


ROSTER_COLUMNS = ("name", "id", "email")  # from --roster, after the student's entry name
CANVAS = "gradebook-canvas.csv"


def gradebook_csv(columns: list[tuple[str, float]], rows: list, roster: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["student", *(ROSTER_COLUMNS if roster else ()), "status", "total", "max"]
                    + [csv_cell(f"{name} ({most:g})") for name, most in columns]
                    + ["test_accuracy", "params", "seconds", "peak_mb", "same_as", "reason"])
    for row in rows:
        points = {i.name: i.points for i in row.items}
        known = row.roster or {}
        listed = [csv_cell(known.get(c, "")) for c in ROSTER_COLUMNS] if roster else []
        writer.writerow([csv_cell(row.student), *listed,
                         csv_cell(row.status), _num(row.total), _num(row.max)]
                        + [_num(points.get(name, 0)) for name, _ in columns]
                        + ["" if row.test_accuracy is None else f"{row.test_accuracy:.4f}",
                           "" if row.params is None else row.params, row.seconds,
                           "" if row.peak_mb is None else row.peak_mb,
                           csv_cell(" ".join(row.same_as or ())), csv_cell(_one_line(row.reason))])
    return buf.getvalue()


def canvas_csv(assignment: str, most: float, rows: list) -> str:
    """Canvas's gradebook import: Student, ID, SIS User ID, Section and one column, the assignment,
    with each total; the rows of the roster's students only, after Canvas's own "Points Possible"
    row. A student not graded yet has an empty cell, which Canvas leaves as it was."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["Student", "ID", "SIS User ID", "Section", csv_cell(assignment)])
    writer.writerow(["    Points Possible", "", "", "", _num(most)])
    for row in rows:
        who = row.roster
        if who is not None:
            writer.writerow([csv_cell(who["name"]), csv_cell(who["canvas_id"]), csv_cell(who["id"]),
                             csv_cell(who["section"]), "" if row.status == "not graded" else _num(row.total)])
    return buf.getvalue()


def _num(value: float) -> str:
    return f"{value:g}"


def _count(value) -> str:
    return "" if value is None else f"{value:,}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _place(p) -> str:
    """Where a problem (a netspec.errors.Problem) is, as a student reads it: spec.yaml:9:3 (or the file alone)."""
    return f"{Path(p.file).name}:{p.line}:{p.col}" if p.line else Path(p.file).name


def _hinted(p) -> str:
    return f"{p.path or '(top)'}: {p.message}" + (f" (hint: {p.hint})" if p.hint else "")


def _names(students) -> str:
    return ", ".join(md_text(s) for s in students)


def grades_markdown(name: str, columns: list[tuple[str, float]], rows: list, about: dict,
                    histogram: bool) -> str:
    most = sum(m for _, m in columns)
    graded = [r for r in rows if r.test_accuracy is not None]
    lines = [f"# Grades: {md_text(name)}", "",
             f"{len(rows)} submissions; {len(graded)} measured on the {about['test']} ({about['mode']} mode"
             + (f", trained on {about['limit']:,} images" if about.get("limit") and about["mode"] == "retrain" else "")
             + f"). Out of {most:g} points.", ""]
    if about.get("locked"):
        lines += ["Locked for everyone: " + ", ".join(f"`{k}: {v}`" for k, v in about["locked"].items()) + ".", ""]
    if rows:
        totals = sorted(r.total for r in rows)
        lines += [f"Total points: mean {sum(totals) / len(totals):.1f}, median {totals[len(totals) // 2]:g}, "
                  f"lowest {totals[0]:g}, highest {totals[-1]:g}.", ""]
    if histogram:
        lines += [f"![test accuracy of the class]({HISTOGRAM})", ""]
    lines += ["## Class", "", "| student | points | test accuracy | params | status | same as |", "|---|---:|---:|---:|---|---|"]
    for r in rows:
        acc = "" if r.test_accuracy is None else f"{r.test_accuracy:.4f}"
        lines.append(f"| [{md_text(r.student)}]({FEEDBACK}/{r.file_name}.md) | {r.total:g} / {r.max:g} "
                     f"| {acc} | {_count(r.params)} | "
                     f"{md_text(STATUS_TEXT.get(r.status, r.status))} | {_names(r.same_as or ())} |")
    if graded:
        lines += ["", "## Leaderboard", "", "| rank | student | test accuracy | params |", "|---:|---|---:|---:|"]
        ranked = sorted(graded, key=lambda r: (-r.test_accuracy, r.params or 0, r.student))
        for i, r in enumerate(ranked[:10], 1):
            lines.append(f"| {i} | {md_text(r.student)} | {r.test_accuracy:.4f} | {r.params:,} |")
    failures = {}
    for r in rows:
        for item in r.items:
            if item.passed is False:
                failures[item.name] = failures.get(item.name, 0) + 1
    if failures:
        lines += ["", "## Rubric items failed", "", "| item | submissions |", "|---|---:|"]
        lines += [f"| {md_text(k)} | {v} |" for k, v in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))]
    dupes = [r for r in rows if r.same_as]
    if dupes:
        lines += ["", "## Identical submissions", "",
                  "Same resolved spec" + (" and same weights" if about["mode"] == "evaluate" else "") + ":", ""]
        seen = set()
        for r in dupes:
            group = tuple(sorted([r.student, *r.same_as]))
            if group not in seen:
                seen.add(group)
                lines.append("- " + _names(group))
    return "\n".join(lines) + "\n"


def feedback_markdown(name: str, row, run_link: str | None) -> str:
    lines = [f"# {md_text(name)}: {md_text(row.student)}", "",
             f"**{row.total:g} of {row.max:g} points** ({md_text(STATUS_TEXT.get(row.status, row.status))})", ""]
    if row.test_accuracy is not None:
        lines += [f"Test accuracy {row.test_accuracy:.4f} on {row.test_size:,} images; {row.params:,} parameters.", ""]
    if row.reason and row.status not in ("graded",):
        lines += [f"Why: {md_text(row.reason)}", ""]
    lines += ["| item | points | of | note |", "|---|---:|---:|---|"]
    for item in row.items:
        mark = "" if item.passed is None else ("✓ " if item.passed else "✗ ")
        lines.append(f"| {mark}{md_text(item.name)} | {item.points:g} | {item.max_points:g} | {md_text(item.note)} |")
    if row.problems:
        lines += ["", "## What to fix", ""]
        lines += [f"- **{md_text(_place(p))}** {md_text(_hinted(p))}" for p in row.problems]
    # row.same_as stays in grades.md and gradebook.csv: one student's page names no other student
    if run_link:
        lines += ["", "## Training", "", f"![loss curves]({run_link}/loss.png)", "",
                  f"The run folder: [{run_link}]({run_link}/report.md)"]
    return "\n".join(lines) + "\n"


def write_gradebook(folder: Path, name: str, columns: list[tuple[str, float]], rows: list, about: dict,
                    roster: bool = False) -> None:
    """gradebook.csv, grades.md, grades-accuracy.png and feedback/; with a `roster` (each row's
    `roster`: its student's name, id, email, section, canvas_id, or None) also gradebook-canvas.csv."""
    folder = Path(folder)
    (folder / FEEDBACK).mkdir(parents=True, exist_ok=True)
    _write(folder / "gradebook.csv", gradebook_csv(columns, rows, roster))
    if roster:
        _write(folder / CANVAS, canvas_csv(name, sum(m for _, m in columns), rows))
    accs = [r.test_accuracy for r in rows if r.test_accuracy is not None]
    if accs:
        from netspec.report import plots  # matplotlib, only when there is a histogram to draw

        fig = plots.accuracy_histogram(accs, f"{name}: test accuracy ({len(accs)} submissions)")
        atomic_write(folder / HISTOGRAM, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    _write(folder / "grades.md", grades_markdown(name, columns, rows, about, histogram=bool(accs)))
    for row in rows:
        run = row.run_dir
        link = os.path.relpath(run, folder / FEEDBACK) if run and (Path(run) / "loss.png").is_file() else None
        _write(folder / FEEDBACK / f"{row.file_name}.md", feedback_markdown(name, row, link))


def gradescope_results(row, visibility: str, seconds: float) -> dict:
    """Gradescope's results.json for one graded submission (its autograder specification): the
    score, one test per rubric item, the reason as output, and a leaderboard of accuracy and size."""
    tests = [{"name": item.name, "score": item.points, "max_score": item.max_points,
              "status": "passed" if item.passed else "failed", "output": item.note, "visibility": visibility}
             for item in row.items]
    lines = [f"{row.total:g} of {row.max:g} points ({STATUS_TEXT.get(row.status, row.status)})"]
    if row.reason and row.status != "graded":
        lines.append(f"Why: {row.reason}")
    lines += [f"{_place(p)} {_hinted(p)}" for p in row.problems]
    out = {"score": row.total, "execution_time": max(0, round(seconds)), "output": "\n".join(lines), "tests": tests}
    if row.test_accuracy is not None:
        out["leaderboard"] = [{"name": "Test accuracy", "value": round(row.test_accuracy, 4), "order": "desc"},
                              {"name": "Parameters", "value": row.params, "order": "asc"}]
    return out
