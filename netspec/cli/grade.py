"""`netspec grade` (the instructor's side of the rules) and `netspec validate --rubric` (the same
verdicts, as a student sees them before submitting)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from netspec.cli.base import Command, DataDirOpt, app, err, out, problem_text, user_errors
from netspec.report.escape import terminal_text

if TYPE_CHECKING:
    from netspec.grading.row import GradeRow

RubricOpt = Annotated[Optional[Path], typer.Option("--rubric", metavar="RUBRIC", help="the rubric (YAML): rule sets, "
                                                   "locked settings, points, limits, test data")]


def graded_line(row: GradeRow) -> None:
    """One line per graded student (a top-level function: worker processes print it too)."""
    acc = "" if row.test_accuracy is None else f"  accuracy {row.test_accuracy:.4f}"
    reasons = row.reason.split("; ") if row.reason and row.status != "graded" else []
    why = f"  ({reasons[0]}{f'; and {len(reasons) - 1} more' if len(reasons) > 1 else ''})" if reasons else ""
    # names and reasons are the students' text: their control characters are shown, not obeyed
    print(terminal_text(f"{row.student}: {row.total:g}/{row.max:g}  {row.status}{acc}  "
                        f"{row.seconds:.1f}s{why}"), flush=True)


# Its parameters are its command-line options (Typer reads them from the signature).
@app.command("grade", cls=Command)
def grade_cmd(
    submissions: Annotated[Optional[Path], typer.Argument(
        help="folder with one entry per student: a spec file, or a folder with a spec (and model.safetensors or model.pt)",
        show_default=False, metavar="SUBMISSIONS")] = None,
    rubric: RubricOpt = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="the grade folder (default grades-<rubric name>); "
                                                    "run again to continue an interrupted class")] = None,
    workers: Annotated[int, typer.Option("--workers", metavar="N", help="grader processes on this machine")] = 1,
    storage: Annotated[Optional[str], typer.Option("--storage", metavar="URL", help="a database shared by graders on "
                                                   "several machines (default: a journal file in --out)")] = None,
    data_dir: DataDirOpt = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", metavar="NAME", help="grade this student again (their "
                                                      "entry's name; repeat for more), and nobody else; the gradebook "
                                                      "still lists the class")] = None,
    roster: Annotated[Optional[Path], typer.Option("--roster", metavar="CSV", help="the class list: columns folder, name, "
                                                   "id, email (section, canvas_id optional); adds them to gradebook.csv "
                                                   "and writes gradebook-canvas.csv (Canvas's import)")] = None,
    gradescope: Annotated[bool, typer.Option("--gradescope", help="grade one submission inside Gradescope's "
                                             "/autograder tree and write results/results.json")] = False,
    root: Annotated[Path, typer.Option("--root", metavar="DIR", help="the autograder tree (--gradescope)")] = Path("/autograder"),
    make_autograder: Annotated[Optional[Path], typer.Option("--make-autograder", metavar="ZIP", help="write Gradescope's "
                                                            "autograder zip for --rubric")] = None,
    wheel: Annotated[Optional[Path], typer.Option("--wheel", metavar="WHL", help="a netspec wheel for setup.sh to "
                                                  "install (default: the zip holds this netspec's source and installs it)")] = None,
):
    """Grade a class of specs by a rubric: gradebook.csv, grades.md and feedback/<student>.md;
    or act as a Gradescope autograder (--gradescope, --make-autograder)."""
    if gradescope:
        from netspec.grading.gradescope import grade_gradescope

        with user_errors():
            result = grade_gradescope(root, data_dir)
        out.print(f"{result['score']:g} points; wrote {escape(str(root / 'results' / 'results.json'))}", highlight=False)
        return
    if rubric is None:
        raise typer.BadParameter("give the rubric: --rubric RUBRIC.yaml", param_hint="--rubric")
    if make_autograder is not None:
        from netspec.grading.gradescope import make_autograder as make

        with user_errors():
            names = make(rubric, make_autograder, wheel)
        out.print(f"wrote {escape(str(make_autograder))}: {', '.join(names)}", highlight=False)
        return
    if submissions is None:
        raise typer.BadParameter("give the folder of submissions", param_hint="SUBMISSIONS")
    from netspec.grading.classroom import grade

    with user_errors():
        book = grade(submissions, rubric, out=out_dir, workers=workers, storage=storage, data_dir=data_dir,
                     on_graded=graded_line, only=only or (), roster=roster)
    waiting = [r.student for r in book.rows if r.status == "not graded"]
    canvas = ", gradebook-canvas.csv" if roster is not None else ""
    out.print(f"{len(book.rows) - len(waiting)} of {len(book.rows)} graded; {escape(str(book.folder))}: gradebook.csv"
              f"{canvas}, grades.md, feedback/", highlight=False)
    if book.unlisted:
        err.print(f"[yellow]not on the roster[/] (no name or ID, not in gradebook-canvas.csv): "
                  f"{escape(terminal_text(', '.join(book.unlisted)))}", highlight=False)
    if waiting:
        err.print(f"[yellow]not graded yet:[/] {escape(terminal_text(', '.join(waiting)))}", highlight=False)


def print_rubric_verdicts(specs: list[Path], rubric_file: Path) -> bool:
    """validate --rubric: each spec's points before training, as the grader gives them. True if
    every spec is valid and breaks no rule."""
    from netspec.grading.rubric import load_rubric
    from netspec.grading.verdict import Entry, judge

    with user_errors():
        rubric = load_rubric(rubric_file)
    ok = True
    for spec in specs:
        verdict = judge(Entry(spec.stem, str(spec), spec=str(spec) if spec.is_file() else None,
                              problem="" if spec.is_file() else f"{spec} is not a file"), rubric)
        ok &= verdict.status == "valid"
        most = sum(i.max_points for i in verdict.items)
        mark = "[green]✓[/]" if verdict.status == "valid" else "[red]✗[/]"
        out.print(f"{mark} {escape(terminal_text(spec))}  {verdict.points:g} of {most:g} points before training "
                  f"(rubric {escape(rubric.name)})", highlight=False)
        for item in verdict.items[:-1]:
            sign = "[green]✓[/]" if item.passed else "[red]✗[/]" if item.passed is False else "-"
            out.print(f"  {sign} {escape(item.name)}: {item.points:g}/{item.max_points:g}"
                      + (f"  [dim]{escape(item.note)}[/]" if item.note else ""), highlight=False)
        acc = verdict.items[-1]
        where = "the hidden test set" if rubric.hidden_test else f"the {rubric.test_dataset} test split"
        out.print(f"  - {escape(acc.name)}: up to {acc.max_points:g}, measured by the grader on {where}"
                  + (f"  [red]{escape(acc.note)}[/]" if acc.note else ""), highlight=False)
        for p in verdict.problems:
            out.print("  " + problem_text(p), highlight=False)
    return ok
