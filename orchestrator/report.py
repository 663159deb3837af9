"""The verify report: a terminal table (rich) and a self-contained HTML page with the per-step
loss curves of every run overlaid, the first divergent step marked, and the environment
differences listed. The HTML has no scripts and no external assets: it opens anywhere."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from orchestrator.messages import redact
from orchestrator.probe.fingerprint import printable
from orchestrator.verdict import wording
from orchestrator.verdict.compare import PairVerdict, Verdict, category, differences_between

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rich.console import Console

    from orchestrator.bisect import Report as Bisected
    from orchestrator.verify import TargetResult, VerifyResult

# Verdicts of bisect under which a ranked cause is still only likely: not tested by it (a
# consequence follows from another difference, which is what is shown).
_UNTESTED = ("not applicable here", "unresolved")

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _torch(t: TargetResult) -> str:
    if not t.runs:
        return "-"
    env = t.runs[0].fingerprint.environment
    return printable(env.packages.get("torch", env.torch_version))


def _python(t: TargetResult) -> str:
    if not t.runs:
        return "-"
    return printable(t.runs[0].fingerprint.environment.python.version.split()[0])


def _short(t: TargetResult) -> str:
    if not t.runs:
        return "-"
    return t.runs[0].fingerprint.stages.final_params.removeprefix("sha256:")[:12]


def probe_line(result: VerifyResult) -> str:
    """Which probe ran, how: ``probe orchestrator.probe.workload:train, 30 steps, seed 0``."""
    spec = result.spec
    return f"probe {result.probe}, {spec.verify.steps} steps, seed {spec.determinism.seed}"


def _verdict_text(t: TargetResult) -> str:
    if t.status != "ok":
        return f"{t.status}: {printable(t.reason)}"
    assert t.verdict is not None
    parts = sorted({wording.result(p) for p in t.verdict.pairs})
    if t.drift:
        parts.append("differs from the spec" + (" (accepted)" if t.drift_accepted else ""))
    return "; ".join(parts)


def cause_lines(pair: PairVerdict, bisected: Bisected | None, shown: int = 5) -> list[str]:
    """A diverged pair's causes, each marked (``wording.cause_line``): with ``bisected`` (its
    ``verify --bisect`` experiments) the one-line outcome, then what bisect proved, then the
    ranked causes it did not test; without, the first ``shown`` ranked causes, all likely."""
    if bisected is None:
        return [wording.cause_line(c, False) for c in pair.causes[:shown]]
    judged = {j.difference.key: j.verdict for j in bisected.judged}
    lines = [bisected.brief()]
    lines += [
        wording.cause_line(f"{category(j.difference.key)}: {j.difference}", True)
        for j in bisected.proven
    ]
    untested = [
        c
        for c in pair.causes
        if not c.startswith("... ")  # the count of the rest: bisect judged them all
        and judged.get(wording.cause_key(c), "not applicable here") in _UNTESTED
    ]
    return lines + [wording.cause_line(c, False) for c in untested[:shown]]


def print_table(
    result: VerifyResult,
    console: Console,
    bisections: Mapping[tuple[str, str], Bisected] | None = None,
) -> None:
    """The table, then each reason and cause once, then the outcome. Every cell is plain text
    (never markup). The table fits 80 columns (CI's width) with the verdict wrapped, not cut:
    no outer border, one space between columns, the digest (of the final parameters) in 8
    hex digits; the HTML report has 12. ``bisections`` (``verify --bisect``, by the pair's
    names) mark each diverged pair's causes proven or likely (``cause_lines``)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=Text(f"envparity verify: {printable(result.spec.environment.name)}"),
        caption=Text(probe_line(result)),
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )
    for col in ("target", "python", "torch", "device", "runs", "digest"):
        table.add_column(col, no_wrap=True)
    table.add_column("verdict", min_width=17, ratio=1)
    for t in result.targets:
        device = t.runs[0].fingerprint.device if t.runs else "-"
        runs = f"{len(t.runs)}" + (" cached" if t.runs and all(r.cached for r in t.runs) else "")
        style = {
            "ok": "green" if t.verdict and t.verdict.equivalent else "red",
            "skipped": "yellow",
            "failed": "red",
        }[t.status]
        if t.status == "ok" and t.drift and not t.drift_accepted:
            style = "red"
        verdict = t.status if t.status != "ok" else _verdict_text(t)
        cells = (t.name, _python(t), _torch(t), device, runs, _short(t)[:8] or "-", verdict)
        table.add_row(*(Text(redact(c)) for c in cells), style=style)
    console.print(table)
    problems = result.problems
    # A reason printed in a FAIL line below is not printed here too.
    lines: list[str] = [
        f"{t.name} {t.status}: {printable(t.reason)}"
        for t in result.targets
        if t.status != "ok" and not any(p.startswith(f"{t.name}: ") for p in problems)
    ]
    lines += [
        f"{t.name}: differs from the spec (accepted): {printable(d)}"
        for t in result.targets
        if t.drift_accepted
        for d in t.drift
    ]
    lines += [f"{t.name}: note: {printable(n)}" for t in result.targets for n in t.notes]
    if result.across is not None:
        for p in result.across.pairs:
            a, b = result.pair_names(p)
            lines.append(wording.pair_line(a, b, p))
            if p.kind == "tolerance":
                lines.append(f"  {p.reason}")
            if p.kind == "diverged" and p.values:
                lines.append(f"  values: {p.values[0]} vs {p.values[1]}")
            lines += [f"  {c}" for c in cause_lines(p, (bisections or {}).get((a, b)))]
            lines += [f"  warning: {w}" for w in p.warnings]
    for comparison in result.references.comparisons if result.references else []:
        bisected = (bisections or {}).get((comparison.target, comparison.against))
        if bisected is not None:
            lines.append(comparison.line())
            lines += [f"  {c}" for c in cause_lines(comparison.pair, bisected)]
    for line in lines:  # plain text: reasons and causes may hold "[...]", which is not markup
        console.print(Text(redact(line)))
    for problem in problems:
        console.print(Text.assemble(("FAIL ", "bold red"), printable(redact(problem))))
    if not problems:
        console.print(
            Text.assemble(("OK", "bold green"), ": every target that ran computes the same thing")
        )


def _first_divergence(result: VerifyResult) -> tuple[int | None, str]:
    verdicts: list[tuple[str, Verdict]] = [(t.name, t.verdict) for t in result.targets if t.verdict]
    if result.across is not None:
        verdicts.append(("across targets", result.across))
    for name, v in verdicts:
        for p in v.pairs:
            if p.kind == "diverged" and p.stage == "losses" and p.step is not None:
                return p.step, f"{name}: {p.reference} vs {p.other}"
    return None, ""


def _svg(result: VerifyResult) -> str:
    series = [
        (f"{t.name} run {r.index}", r.fingerprint.losses) for t in result.targets for r in t.runs
    ]
    finite = [x for _, ys in series for x in ys if math.isfinite(x)]
    if not finite:
        return "<p>No losses to plot.</p>"
    w, h, pad = 720, 320, 48
    steps = max(len(ys) for _, ys in series)
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0

    def xy(i: int, y: float) -> str:
        x = pad + (w - 2 * pad) * (i / max(steps - 1, 1))
        yy = h - pad - (h - 2 * pad) * ((y - lo) / span)
        return f"{x:.1f},{yy:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
        f'aria-label="per-step loss of every run">',
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#444"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#444"/>',
        f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle" font-size="12">step</text>',
        f'<text x="{pad - 6}" y="{pad}" text-anchor="end" font-size="11">{hi:.4g}</text>',
        f'<text x="{pad - 6}" y="{h - pad}" text-anchor="end" font-size="11">{lo:.4g}</text>',
        f'<text x="{pad}" y="{h - pad + 14}" text-anchor="middle" font-size="11">0</text>',
        f'<text x="{w - pad}" y="{h - pad + 14}" text-anchor="middle" font-size="11">{steps - 1}</text>',
    ]
    step, _ = _first_divergence(result)
    if step is not None:
        x = xy(step, lo).split(",")[0]
        parts.append(
            f'<line class="divergence" x1="{x}" y1="{pad}" x2="{x}" y2="{h - pad}" '
            f'stroke="#d62728" stroke-dasharray="4 3"/>'
        )
        parts.append(
            f'<text x="{x}" y="{pad - 8}" text-anchor="middle" font-size="11" '
            f'fill="#d62728">first divergence: step {step}</text>'
        )
    for n, (label, ys) in enumerate(series):
        points = " ".join(xy(i, y) for i, y in enumerate(ys) if math.isfinite(y))
        colour = _COLOURS[n % len(_COLOURS)]
        dash = ' stroke-dasharray="6 3"' if n % 2 else ""
        parts.append(
            f'<polyline class="run" fill="none" stroke="{colour}" stroke-width="1.5"{dash} '
            f'points="{points}"><title>{html.escape(label)}</title></polyline>'
        )
    parts.append("</svg>")
    legend = "".join(
        f'<li><span style="color:{_COLOURS[n % len(_COLOURS)]}">&#9632;</span> {html.escape(label)}</li>'
        for n, (label, _) in enumerate(series)
    )
    return "\n".join(parts) + f'\n<ul class="legend">{legend}</ul>'


def _differences(result: VerifyResult) -> str:
    ok = [t for t in result.targets if t.runs]
    if len(ok) < 2:
        return "<p>Only one environment ran: nothing to compare across.</p>"
    ref = ok[0].runs[0].fingerprint
    blocks = []
    for t in ok[1:]:
        found = differences_between(ref, t.runs[0].fingerprint)
        rows = (
            "".join(
                f"<tr><td><code>{html.escape(printable(d.key))}</code></td>"
                f"<td>{html.escape(_cell(d.a))}</td><td>{html.escape(_cell(d.b))}</td></tr>"
                for d in found[:200]
            )
            or '<tr><td colspan="3">none</td></tr>'
        )
        blocks.append(
            f"<h3>{html.escape(ok[0].name)} vs {html.escape(t.name)} ({len(found)})</h3>"
            f"<table><tr><th>key</th><th>{html.escape(ok[0].name)}</th>"
            f"<th>{html.escape(t.name)}</th></tr>{rows}</table>"
        )
    return "\n".join(blocks)


def _cell(value: object) -> str:
    return "(absent)" if value is None else str(value)


def render_html(
    result: VerifyResult, bisections: Mapping[tuple[str, str], Bisected] | None = None
) -> str:
    rows = []
    for t in result.targets:
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(c)}</td>"
                for c in (
                    t.name,
                    _python(t),
                    _torch(t),
                    t.runs[0].fingerprint.device if t.runs else "-",
                    _short(t),
                    _verdict_text(t),
                )
            )
            + "</tr>"
        )
    step, where = _first_divergence(result)
    status = "; ".join(result.problems) or "every target that ran computes the same thing"
    divergence = (
        f"<p class='divergence'>First divergent step: <b>{step}</b> ({html.escape(where)})</p>"
        if step is not None
        else ""
    )
    marked: list[str] = []
    for p in result.across.pairs if result.across is not None else ():
        if p.kind == "diverged":
            a, b = result.pair_names(p)
            marked += [f"{a} vs {b}: {c}" for c in cause_lines(p, (bisections or {}).get((a, b)))]
    for comparison in result.references.comparisons if result.references else []:
        bisected = (bisections or {}).get((comparison.target, comparison.against))
        if bisected is not None:
            label = f"{comparison.target} vs {comparison.against}"
            marked += [f"{label}: {c}" for c in cause_lines(comparison.pair, bisected)]
    items = "".join(f"<li>{html.escape(printable(c))}</li>" for c in marked)
    causes = f"<h2>Causes</h2><ul id='causes'>{items}</ul>" if items else ""
    verdicts = [t.verdict for t in result.targets if t.verdict] + (
        [result.across] if result.across else []
    )
    notes = [f"{t.name}: {n}" for t in result.targets for n in t.notes]
    notes += result.references.lines() if result.references is not None else []
    notes += sorted({f"warning: {w}" for v in verdicts for p in v.pairs for w in p.warnings})
    notes_html = (
        "<h2>Notes</h2><ul id='notes'>"
        + "".join(f"<li>{html.escape(printable(n))}</li>" for n in notes)
        + "</ul>"
        if notes
        else ""
    )
    name = html.escape(result.spec.environment.name)
    return redact(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>envparity verify: {name}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:13px}}
.status{{font-weight:bold}} .legend{{list-style:none;padding:0;display:flex;gap:1.5em;flex-wrap:wrap}}</style>
</head><body>
<h1>envparity verify: {name}</h1>
<p id="probe">{html.escape(probe_line(result))}</p>
<p class="status" id="status">{html.escape(status)}</p>
{notes_html}
<table id="targets"><tr><th>target</th><th>python</th><th>torch</th><th>device</th><th>fingerprint</th><th>verdict</th></tr>
{"".join(rows)}</table>
<h2>Loss per step, every run</h2>
{divergence}
{_svg(result)}
{causes}
<h2>Environment differences</h2>
{_differences(result)}
</body></html>
""")  # no URL's credentials in a file that is shared as a CI artifact
