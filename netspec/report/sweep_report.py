"""A sweep's record: leaderboard (CSV and terminal), plots, and sweep.md."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from optuna.trial import TrialState
from rich.markup import escape
from rich.table import Table

from netspec.report import plots
from netspec.runner.rundir import atomic_write
from netspec.sweeps.space import decode_value
from netspec.sweeps.study import counted

def leaderboard(study) -> list[dict]:
    """Finished trials, ranked by the validation accuracy of the model each trial saved (its
    last epoch: the same model its test accuracy is measured on). A pruned trial shows its
    last reported epoch. Test accuracy is shown, never used to rank."""
    rows = []
    for t in study.trials:
        if t.state in (TrialState.RUNNING, TrialState.WAITING) or not counted(t):
            continue  # a duplicate or a trial over the budget never trained
        if t.state == TrialState.FAIL and "error" not in t.user_attrs:
            continue  # interrupted or killed: it runs again as a new trial (retry_of), which is shown
        vals = t.intermediate_values
        val = t.value if t.state == TrialState.COMPLETE else (vals[max(vals)] if vals else None)
        rows.append({
            "trial": t.number, "state": t.state.name.lower(),
            "settings": {k: _short(decode_value(v)) for k, v in t.params.items()}, "params": t.user_attrs.get("params_count"),
            "val_accuracy": val, "train_size": t.user_attrs.get("train_size"), "test_accuracy": t.user_attrs.get("test_accuracy"),
            "seconds": t.user_attrs.get("seconds"), "run_dir": t.user_attrs.get("run_dir", ""),
            "error": t.user_attrs.get("error", ""),
        })
    complete = lambda r: r["state"] == "complete"  # noqa: E731
    rows.sort(key=lambda r: (not complete(r), -(r["val_accuracy"] or 0)))
    return rows


def _short(value):
    """A setting as shown: a swept layer list compactly (Linear(200)-ReLU-...), floats to 4 digits."""
    if isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, dict):
                name, args = next(iter(item.items()))
                parts.append(f"{name}({','.join(str(v) for v in (args or {}).values())})")
            else:
                parts.append(str(item))
        return "-".join(parts)
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return value


def _fmt(v, digits=4) -> str:
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _settings(s: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.items())


def leaderboard_table(rows: list[dict], title: str) -> Table:
    table = Table(title=escape(title), title_justify="left")
    for col in ("trial", "state", "settings", "params", "train images", "val acc", "test acc", "seconds"):
        table.add_column(col, justify="left" if col in ("state", "settings") else "right")
    for i, r in enumerate(rows):
        style = "bold green" if i == 0 and r["state"] == "complete" else None
        table.add_row(str(r["trial"]), r["state"], escape(_settings(r["settings"])),
                      f"{r['params']:,}" if r["params"] else "-", f"{r['train_size']:,}" if r["train_size"] else "-",
                      _fmt(r["val_accuracy"]),
                      _fmt(r["test_accuracy"]), _fmt(r["seconds"], 1), style=style)
    return table


def leaderboard_csv(rows: list[dict], keys: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "state", *keys, "params", "train_size", "val_accuracy", "test_accuracy", "seconds", "run_dir"])
    for r in rows:
        w.writerow([r["trial"], r["state"], *[r["settings"].get(k, "") for k in keys], r["params"] or "",
                    r["train_size"] or "", _fmt(r["val_accuracy"], 6), _fmt(r["test_accuracy"], 6), _fmt(r["seconds"], 2), r["run_dir"]])
    return buf.getvalue()


def effects(rows: list[dict], keys: list[str], ranges: dict) -> list[str]:
    """What helped or hurt, from the numbers: mean validation accuracy per setting."""
    done = [r for r in rows if r["state"] == "complete" and r["val_accuracy"] is not None]
    lines = []
    for key in keys:
        if key in ranges:
            pts = sorted((r["settings"][key], r["val_accuracy"]) for r in done if key in r["settings"])
            if len(pts) < 4:
                lines.append(f"- `{key}`: too few finished trials ({len(pts)}) to say")
                continue
            half = len(pts) // 2
            lo = sum(a for _, a in pts[:half]) / half
            hi = sum(a for _, a in pts[half:]) / (len(pts) - half)
            verdict = "higher values helped" if hi > lo else "lower values helped" if lo > hi else "no difference"
            lines.append(f"- `{key}`: {verdict}: mean val acc {lo:.4f} for the lower half "
                         f"({_fmt(pts[0][0])}..{_fmt(pts[half - 1][0])}) vs {hi:.4f} for the upper half "
                         f"({_fmt(pts[half][0])}..{_fmt(pts[-1][0])})")
            continue
        groups: dict = {}
        for r in done:
            if key in r["settings"]:
                groups.setdefault(str(r["settings"][key]), []).append(r["val_accuracy"])
        if len(groups) < 2:
            continue
        means = sorted(((sum(v) / len(v), k, len(v)) for k, v in groups.items()), reverse=True)
        (best, bk, bn), (worst, wk, wn) = means[0], means[-1]
        detail = ", ".join(f"{k}: {m:.4f} ({n} trial{'s' if n > 1 else ''})" for m, k, n in means)
        if min(n for _, _, n in means) < 2:
            # one trial per value cannot separate this setting from the others that changed with it
            lines.append(f"- `{key}`: too few finished trials to say (at least 2 per value are needed; "
                         f"{len(done)} in all). Seen: {detail}")
            continue
        lines.append(f"- `{key}`: best {bk}, worst {wk} (mean val acc {best:.4f} over {bn} trials vs {worst:.4f} "
                     f"over {wn}, a difference of {100 * (best - worst):.2f} points). All: {detail}")
    return lines


def training_lines(base: dict | None, limit, keys: list[str]) -> list[str]:
    """What every trial trained on and for how long, and what a swept batch size also changes."""
    train = (base or {}).get("train", {})
    epochs, batch = train.get("epochs"), train.get("batch_size")
    data = f"the first {limit:,} training images (--limit {limit})" if limit else "the full training set"
    swept = lambda k: k in keys  # noqa: E731
    many = "a swept number of epochs" if swept("train.epochs") else f"{epochs} epoch{'' if epochs == 1 else 's'}"
    lines = [f"Each trial trained {many} on {data}, batch size "
             f"{'swept' if swept('train.batch_size') else batch}."]
    if swept("train.batch_size") and not swept("train.epochs"):
        lines.append(f"At a fixed {epochs} epochs a larger batch also means fewer optimizer steps (training images / "
                     "batch size per epoch): part of what a batch size does here is the number of steps.")
    return lines


def sweep_markdown(name: str, rows: list[dict], space, keys: list[str], base: dict | None = None, limit=None,
                   draft: bool = False) -> str:
    done = [r for r in rows if r["state"] == "complete"]
    lines = [f"# Sweep: {name}", ""]
    if draft:
        lines += ["**Draft sweep: not gradable.** Its trials may override the rules' fixed settings (`--draft`).", ""]
    lines += ["## What was tried", ""]
    for k, v in space.grid.items():
        lines.append(f"- `{k}` over " + ", ".join(str(_short(o)) for o in v))
    for k, r in space.ranges.items():
        lines.append(f"- `{k}` from {r.low} to {r.high}" + (" (log scale)" if r.log else "") + (" (integers)" if r.integer else ""))
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines += ["", *training_lines(base, limit, keys),
              "", f"Sampler: {space.sampler}; trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
              "Trials are ranked by the validation accuracy of the model each one saves (its last epoch); test accuracy is reported, never used to choose.", ""]
    if done:
        best = done[0]
        lines += ["## Best trial", "",
                  f"Trial {best['trial']} ({_settings(best['settings'])}): validation accuracy "
                  f"**{_fmt(best['val_accuracy'])}**, test accuracy **{_fmt(best['test_accuracy'])}**, "
                  f"{best['params']:,} parameters, {_fmt(best['seconds'], 1)} s of training. "
                  f"Run folder: `{best['run_dir']}`.", ""]
    helped = effects(rows, keys, space.ranges)
    if helped:
        lines += ["## What helped and what hurt", "", *helped, ""]
    failed = [r for r in rows if r["state"] == "fail" and r["error"]]
    if failed:
        lines += ["## What failed", "", *[f"- trial {r['trial']} ({_settings(r['settings'])}): {r['error']}" for r in failed], ""]
    lines += ["## Leaderboard", "", "![validation accuracy per trial](trials.png)", "",
              "![accuracy against each swept setting](settings.png)", "",
              "| trial | state | " + " | ".join(f"`{k}`" for k in keys) + " | params | train images | val acc | test acc | seconds |",
              "|---|---|" + "---|" * len(keys) + "---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['trial']} | {r['state']} | " + " | ".join(str(r["settings"].get(k, "")) for k in keys)
                     + f" | {r['params'] or '-'} | {r['train_size'] or '-'} | {_fmt(r['val_accuracy'])} | {_fmt(r['test_accuracy'])} | {_fmt(r['seconds'], 1)} |")
    return "\n".join(lines) + "\n"


def _within(folder: Path, run_dir: str) -> str:
    """A trial's folder relative to the sweep folder when it is there (trial-003: trial numbers are
    the study's, so the name is this trial's), so the leaderboard points at this folder's copy after
    the sweep folder is moved or copied; a trial another machine ran keeps its recorded path."""
    name = Path(run_dir).name
    return name if run_dir and (folder / name).is_dir() else run_dir


def write_sweep_outputs(folder: Path, name: str, study, space) -> list[dict]:
    keys = space.keys
    rows = [r | {"run_dir": _within(folder, r["run_dir"])} for r in leaderboard(study)]
    atomic_write(folder / "leaderboard.csv", lambda f: f.write(leaderboard_csv(rows, keys).encode()))
    base, limit = study.user_attrs.get("base"), study.user_attrs.get("limit")
    draft = bool(study.user_attrs.get("draft"))
    atomic_write(folder / "sweep.md", lambda f: f.write(sweep_markdown(name, rows, space, keys, base, limit, draft).encode()))
    for fname, fig in (("trials.png", plots.trials_figure(rows)),
                       ("settings.png", plots.settings_figure(rows, keys, {k for k, r in space.ranges.items() if r.log}))):
        atomic_write(folder / fname, lambda f, fig=fig: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    return rows
