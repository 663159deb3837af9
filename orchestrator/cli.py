"""``envparity VERB``: a thin layer that parses arguments, calls the library, prints, exits.

This is the one place that turns errors into messages and exit codes:
0 ok, 1 a check or comparison failed, 2 bad input or usage, 130 interrupted.
Each verb imports what it needs when it runs, so ``envparity check`` never imports torch,
numpy or rich, and ``envparity probe`` runs in an environment holding only torch and numpy.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import determinism_settings, tolerances
from orchestrator.determinism_settings import DeterminismSettings
from orchestrator.errors import EnvparityError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

Handler = Callable[[argparse.Namespace], int]


def _err(message: str) -> None:
    from orchestrator.messages import redact  # every message: no URL's credentials shown

    message = redact(message)
    print(
        f"envparity: {message}" if "\n" not in message else f"envparity: error\n{message}",
        file=sys.stderr,
    )


def _say(line: str) -> None:
    """A report line on stdout, with every URL's credentials shown as ***."""
    from orchestrator.messages import redact

    print(redact(line))


def _spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from orchestrator import spec

    return spec.load(args.spec or spec.SPEC_FILE)


# --------------------------------------------------------------------------- spec and files


def cmd_init(args: argparse.Namespace) -> int:
    from orchestrator import init

    target = Path(args.spec or "environment.toml")
    converted = init.convert(
        Path(args.from_file) if args.from_file else None, name=args.name, spec_dir=target.parent
    )
    init.write_spec(target, converted.text, force=args.force)
    for line in converted.unlockable:  # kept in the spec as '# not converted:' comments
        _err(f"not converted: {line}")
    print(f"wrote {target}")
    from orchestrator import compat, spec

    draft = spec.load(target)
    for problem in compat.check(draft):  # written all the same: a draft to edit
        _err(f"warning: {problem} (edit {target} before 'envparity lock')")
    for note in compat.abi_notes(draft):
        _err(f"note: {note}")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from orchestrator import compat, lock

    spec = _spec(args)
    if args.check:
        stale = lock.stale_locks(spec)
        for problem in stale:
            print(problem)
        if stale:
            print("run 'envparity lock' to update", file=sys.stderr)
        return 1 if stale else 0
    # every flavor asked for refused: the refusal alone, before the notes (a flavor refused
    # beside others that lock is named by lock.lock on its own line)
    lock.refuse_when_no_flavor_locks(spec, args.flavor or None)
    for line in compat.architecture_warnings(spec):
        _err(f"warning: {line}")
    for note in compat.abi_notes(spec):
        _err(f"note: {note}")
    try:
        written = lock.lock(
            spec,
            upgrade=args.upgrade,
            flavors=args.flavor or None,
            force=args.force,
            progress=lambda message: print(message, file=sys.stderr, flush=True),
        )
    except lock.LockIncomplete as exc:  # the flavors that resolved are written: say so first
        for path in exc.written:
            print(f"wrote {path}")
        raise
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from orchestrator import compat, files, lock, render
    from orchestrator.render.flake import flake_warnings

    spec = _spec(args)
    lock.refuse_incompatible(spec)
    rendered = render.render_all(spec)
    for warning in compat.architecture_warnings(spec) + flake_warnings(spec):
        _err(f"warning: {warning}")
    orphans = render.orphans(spec, rendered)
    if args.check:
        drift = files.drift(spec.root, rendered)
        for d in drift:
            sys.stdout.write(d.diff)
        for path in orphans:
            print(f"{path}: no longer produced by {spec.path.name}")
        if drift or orphans:
            print(
                f"{len(drift) + len(orphans)} generated file(s) out of date; run 'envparity render'",
                file=sys.stderr,
            )
        return 1 if drift or orphans else 0
    results = files.write_all(spec.root, rendered, remove=orphans, force=args.force)
    for path, status in results:
        print(f"{status:>9} {path}")
    written = [(path, status) for path, status in results if status != "removed"]
    removed = [path for path, status in results if status == "removed"]
    print(_render_summary(spec.path.name, written, removed), file=sys.stderr)
    return 0


def _render_summary(spec_name: str, written: list[tuple[str, str]], removed: list[str]) -> str:
    """One line saying what ``render`` did, also when the spec asks for no generated file."""
    if not written and not removed:
        return (
            f"render: nothing to write: {spec_name} has no [targets.nix], [targets.devcontainer], "
            "[variables] or [ci] (locks are written by 'envparity lock'; 'envparity init' writes "
            "the two targets as comments, ready to uncomment)"
        )
    changed = sum(1 for _, status in written if status != "unchanged")
    return (
        f"render: wrote {changed} of {len(written)} generated file(s)"
        + (f", removed {len(removed)}" if removed else "")
        + (" (the rest were current)" if changed < len(written) else "")
    )


def cmd_check(args: argparse.Namespace) -> int:
    spec = _spec(args)
    from orchestrator import check

    report = check.check(spec)
    for line in report.lines:
        _say(line)
    return report.exit_code


def cmd_doctor(args: argparse.Namespace) -> int:
    from orchestrator import doctor

    report = doctor.doctor(Path(args.spec or "environment.toml"))
    for line in report.lines:
        _say(line)  # its fix commands name mirrors, which may carry credentials
    return report.exit_code


def cmd_ci(args: argparse.Namespace) -> int:
    from orchestrator import files, lock, render

    spec = _spec(args)
    path = render.CI_FILES[args.provider]
    if spec.ci is None:
        table = "" if args.provider == "github" else f' with providers = ["{args.provider}"]'
        raise UsageError(
            f"{spec.path.name}: no [ci] table; add one (an empty [ci] will do{table}) so that "
            f"render and check keep {path} up to date"
        )
    if args.provider not in spec.ci.providers:
        wanted = ", ".join(f'"{p}"' for p in (*spec.ci.providers, args.provider))
        raise UsageError(
            f"{spec.path.name}: ci.providers does not name {args.provider!r}; set providers = "
            f"[{wanted}] so that render and check keep {path} up to date"
        )
    lock.refuse_incompatible(spec)
    (generated,) = render.render_ci(spec, (args.provider,))
    if args.check:
        drift = files.drift(spec.root, [generated])
        for d in drift:
            sys.stdout.write(d.diff)
        return 1 if drift else 0
    for path, status in files.write_all(spec.root, [generated], force=args.force):
        print(f"{status:>9} {path}")
    return 0


# --------------------------------------------------------------------------- probing


def cmd_probe(args: argparse.Namespace) -> int:
    from orchestrator import files
    from orchestrator.probe import fingerprint, run

    out = Path(args.out)
    fingerprint.check_writable(out)  # before training, not after
    files.check_output(out)  # nor a link or a device
    try:
        determinism = DeterminismSettings.from_arguments(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    fp = run.run_probe(
        probe=args.probe,
        steps=run.DEFAULT_STEPS if args.steps is None else args.steps,
        device=args.device,
        determinism=determinism,
        world_size=args.world_size,
    )
    fingerprint.write(out, fp.to_dict())
    for finding in fp.audit:
        _err(f"audit: {finding}")
    if fp.inputs.outside:
        from orchestrator.probe.inputs import outside_note

        _err(f"note: {fingerprint.printable(outside_note(fp.inputs.outside))}")
    print(
        f"wrote {out}: {fp.probe} seed {fp.seed}, {fp.steps} steps on {fp.device}, "
        f"last loss {fp.losses[-1]!r}, {fp.seconds or 0.0:.2f} s"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from orchestrator.probe import fingerprint
    from orchestrator.verdict import compare, wording

    if args.references is None and (args.summary or args.report or args.record_to):
        raise UsageError("compare: --summary, --report and --record-to need --references DIR")
    given = {name: getattr(args, name) for name in tolerances.NAMES}
    for name, value in given.items():
        if value is not None and not tolerances.valid(value):  # also refuses nan
            option = "--" + name.replace("_", "-")
            raise UsageError(f"compare {option} {value}: not a tolerance in {tolerances.RANGE}")
    base = tolerances.DEFAULTS
    if None in given.values() and args.spec:  # only a spec named by --spec/ENVPARITY_SPEC
        base = _spec(args).verify.tolerances
        print(f"tolerances from {args.spec} [verify] where not given", file=sys.stderr)
    fps = [fingerprint.load(path) for path in args.fingerprints]
    if args.references is not None:
        if args.json:
            raise UsageError("compare: --json and --references cannot be combined")
        return _compare_with_references(args, fps, given)
    verdict = compare.compare(fps, base.given(**given))
    if args.json:
        print(json.dumps(verdict.to_dict(), indent=1))
    else:
        _print_lines(wording.verdict_lines(verdict), style="green" if verdict.equivalent else "red")
    return 0 if verdict.equivalent else 1


def _compare_with_references(
    args: argparse.Namespace, fps: list[Any], given: dict[str, float | None]
) -> int:
    """``compare --references DIR``: runs of several machines (CI artifacts), each with the
    first of its hardware class and with the references (``verdict.references``), tolerances
    from the spec where not given; ``--record-to`` and ``--report`` write what the CI's compare
    job hands over (``orchestrator.ci_runs``)."""
    import os

    from orchestrator import ci_runs, files, references
    from orchestrator.verdict.references import compare_artifacts

    spec = _spec(args)
    for output in (args.report, args.summary):
        if output:
            files.check_output(Path(output))
    if args.record_to:
        files.check_output_folder(Path(args.record_to))
    folder = Path(args.references)
    report = compare_artifacts(spec, fps, spec.verify.tolerances.given(**given), folder)
    jobs = ci_runs.by_job(fps)
    if args.record_to and not report.problems:
        written = ci_runs.record(spec, jobs, Path(args.record_to), folder)
        shown = ", ".join(os.path.normpath(p) for p in written if p.name != references.META)
        if shown:  # only runs without a usable reference
            report.notes.append(
                f"these runs are written as references: {shown}; committed as "
                f"{references.FOLDER}/<class>/, later runs are compared with them"
            )
    elif args.record_to:
        report.notes.append(f"nothing written to {args.record_to}: the runs diverged")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        files.atomic_write(Path(args.report), ci_runs.render_report(spec, jobs, report))
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as summary:
            summary.write(report.markdown())
    lines = report.lines() + [f"FAIL {p}" for p in report.problems]
    _print_lines([report.headline(), *lines], style="red" if report.problems else "green")
    return 1 if report.problems else 0


def _check_budget(verb: str, budget: float | None) -> None:
    if budget is not None and not budget > 0:  # also refuses nan
        raise UsageError(f"{verb} --budget {budget}: not a number of seconds above 0")


def cmd_bisect(args: argparse.Namespace) -> int:
    import json

    from orchestrator import bisect, spec

    _check_budget("bisect", args.budget)
    path = Path(args.spec or spec.SPEC_FILE)
    loaded = spec.load(path) if args.spec or path.is_file() else None

    def step(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = bisect.bisect(args.a, args.b, spec=loaded, budget=args.budget, progress=step)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        _print_lines(report.lines(), style="red" if report.exit_code else "green")
    return report.exit_code


def cmd_capture(args: argparse.Namespace) -> int:
    from orchestrator import files
    from orchestrator.probe import capture, fingerprint

    out = Path(args.out)
    fingerprint.check_writable(out)  # before the capture, not after
    files.check_output(out)  # nor a link or a device
    fingerprint.write(out, capture.capture())
    print(f"wrote {out}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from orchestrator.probe import capture, fingerprint
    from orchestrator.verdict import compare

    differences = capture.diff(fingerprint.load_capture(args.a), fingerprint.load_capture(args.b))
    if not differences:
        print(f"{args.a} and {args.b}: same environment")
        return 0
    lines = [f"{args.a} vs {args.b}: {len(differences)} difference(s)"]
    lines += [f"  {compare.category(d.key):<12} {d}" for d in differences]
    _print_lines(lines, style="yellow")
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("run: no command given (usage: envparity run -- CMD [ARGS...])")
    env = {**os.environ, **_spec(args).determinism.launch_env()}
    sys.stdout.flush()
    try:
        os.execvpe(command[0], command, env)  # replaces this process: signals and tty pass
    except OSError as exc:
        raise UsageError(f"run: cannot run {command[0]}: {exc.strerror}") from None


def _console(*, stderr: bool = False) -> Console:
    """A rich console that prints text as given: no markup, no emoji codes, no highlighting
    (user text such as ``nosuchmod:train:`` or ``[extra]`` is never read as markup)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, emoji=False, markup=False, soft_wrap=True)


def _print_lines(lines: list[str], *, style: str) -> None:
    """The first line styled (when rich and a terminal are there), the rest plain."""
    from orchestrator.messages import redact

    console = _console()
    console.print(redact(lines[0]), style=style, markup=False)
    for line in lines[1:]:
        console.print(redact(line), markup=False)


def cmd_verify(args: argparse.Namespace) -> int:
    spec = _spec(args)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from orchestrator import files, report, verify

    _check_budget("verify", args.budget)
    if args.budget is not None and not args.bisect:
        raise UsageError("verify --budget: applies to --bisect, which was not given")
    if args.report:
        files.check_output(Path(args.report))  # no link, device or folder: before the work
    if args.out:
        files.check_output_folder(Path(args.out))

    console = _console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task("starting", total=None)
    started = False

    def step(message: str) -> None:
        nonlocal started
        # The spinner starts with the first step (a refusal before it prints only itself),
        # and only on a terminal: piped output (CI logs) gets the plain lines alone.
        if not started and console.is_terminal:
            progress.start()
            started = True
        progress.update(task, description=message)
        console.print(message)  # plain lines: no time or source tags, no markup

    try:
        result = verify.verify(
            spec,
            names=args.targets,
            strict=args.strict,
            fresh=args.fresh,
            record=args.record,
            out=Path(args.out) if args.out else None,
            concurrent=not args.sequential,
            probe=args.probe,
            accept_host_drift=args.accept_host_drift,
            progress=step,
        )
    finally:
        if started:
            progress.stop()
    bisections = {}
    if args.bisect:  # each diverged pair, by experiment (orchestrator.bisect)
        from orchestrator import bisect

        bisections = bisect.after_verify(result, budget=args.budget, progress=step)
    report.print_table(result, _console(), bisections)
    for path in result.recorded:
        print(f"recorded {path.relative_to(spec.root)}")
    if result.references is not None:
        for line in result.references.lines():
            print(f"reference: {line}")
    html_path = Path(args.report) if args.report else spec.root / ".envparity" / "report.html"
    if not args.report:
        verify.make_cache(html_path.parent)
    files.atomic_write(html_path, report.render_html(result, bisections))
    print(f"report: {html_path}")
    return result.exit_code


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="envparity",
        description="One environment.toml in: a pinned Nix flake, a devcontainer and hashed "
        "locks out, and a seeded probe proving every environment computes the same thing.",
    )
    parser.add_argument(
        "--spec",
        default=os.environ.get("ENVPARITY_SPEC"),
        help="the spec file (default: environment.toml; env ENVPARITY_SPEC)",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = verb("init", cmd_init, "write environment.toml, from scratch or from an existing file")
    p.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="requirements.txt, a conda environment.yml or spec list (conda list --export, "
        "@EXPLICIT), or a Poetry or PEP 621 + uv pyproject.toml",
    )
    p.add_argument("--name", help="the environment name (default: the folder's name)")
    p.add_argument("--force", action="store_true", help="overwrite an existing spec")

    p = verb("lock", cmd_lock, "resolve with uv and write locks/<flavor>.txt with hashes")
    p.add_argument("--check", action="store_true", help="exit 1 if a lock is stale; write nothing")
    p.add_argument(
        "--upgrade", action="store_true", help="ignore current pins; take newest allowed"
    )
    p.add_argument("--flavor", action="append", metavar="FLAVOR", help="lock only this flavor")
    p.add_argument("--force", action="store_true", help="overwrite locks edited by hand")

    p = verb(
        "render",
        cmd_render,
        "write flake.nix, .devcontainer/, .env.example and, with [ci], the CI workflow and "
        "noxfile.py",
    )
    p.add_argument(
        "--check", action="store_true", help="print a diff and exit 1 on drift; write nothing"
    )
    p.add_argument("--force", action="store_true", help="overwrite files edited by hand")

    verb("check", cmd_check, "lock --check + render --check + compatibility; writes nothing")
    verb("doctor", cmd_doctor, "audit this machine and repository against the spec")

    p = verb("probe", cmd_probe, "one seeded training run in this process; fingerprint to FILE")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help=f"training steps (1..{determinism_settings.MAX_STEPS}, the spec's range); default 30",
    )
    p.add_argument("--probe", metavar="MOD:FN", help="a user training function as the probe")
    p.add_argument(
        "--world-size",
        type=int,
        default=None,
        metavar="N",
        help="data-parallel training in N processes (gloo on CPU, NCCL on GPUs); default: one",
    )
    # The spec's [determinism] settings (defaults: the spec's), handed to the probe.
    determinism_settings.add_arguments(p)

    p = verb("compare", cmd_compare, "verdict over fingerprints: 0 equivalent, 1 divergent")
    p.add_argument("fingerprints", nargs="+", metavar="FILE")
    for flag, what in (
        ("--rtol", "relative tolerance on the same device model"),
        ("--atol", "absolute tolerance"),
        ("--cross-device-rtol", "relative tolerance between device models"),
    ):
        p.add_argument(
            flag,
            type=float,
            default=None,
            help=f"{what} (default: bitwise / 1e-4; with --spec or ENVPARITY_SPEC, that spec's [verify])",
        )
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.add_argument(
        "--references",
        metavar="DIR",
        help="runs of several machines: compare by hardware class and with the references in "
        "DIR (fingerprints/); tolerances from the spec",
    )
    p.add_argument(
        "--summary", metavar="FILE", help="with --references: append a Markdown verdict to FILE"
    )
    p.add_argument(
        "--report", metavar="FILE", help="with --references: write the HTML report to FILE"
    )
    p.add_argument(
        "--record-to",
        metavar="DIR",
        help="with --references: when the runs agree, write those without a usable reference "
        "as references to DIR/fingerprints/<class>/ (to commit)",
    )

    p = verb(
        "bisect",
        cmd_bisect,
        "experiments that prove which captured differences make A's results B's: "
        "0 concluded, 1 unresolved",
    )
    p.add_argument("a", metavar="A", help="a fingerprint file, or a target of the spec")
    p.add_argument("b", metavar="B", help="a fingerprint file, or a target of the spec")
    p.add_argument(
        "--budget", type=float, default=None, metavar="SECONDS", help="start no experiment after"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = verb("capture", cmd_capture, "capture this environment to FILE")
    p.add_argument("--out", required=True, metavar="FILE")

    p = verb("diff", cmd_diff, "explain how two captures differ: 0 same, 1 differ")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")

    p = verb("run", cmd_run, "run CMD with the spec's launch environment")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")

    p = verb("verify", cmd_verify, "provision each target, probe twice in each, compare, report")
    p.add_argument("--targets", nargs="+", metavar="TARGET")
    p.add_argument("--strict", action="store_true", help="a skipped target fails the run")
    p.add_argument(
        "--fresh", action="store_true", help="rebuild environments, ignore cached fingerprints"
    )
    p.add_argument(
        "--report", metavar="FILE", help="HTML report path (default: .envparity/report.html)"
    )
    p.add_argument(
        "--probe", metavar="MOD:FN", help="the probe to run (default: the spec's [verify] probe)"
    )
    p.add_argument(
        "--accept-host-drift",
        action="store_true",
        help="report, but do not fail on, a host whose Python or packages differ from the spec",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="write the runs to fingerprints/<hardware class>/ as references (when all agree)",
    )
    p.add_argument("--out", metavar="DIR", help="also copy each run's fingerprint to DIR")
    p.add_argument("--sequential", action="store_true", help="provision one target after another")
    p.add_argument(
        "--bisect",
        action="store_true",
        help="run envparity bisect on each diverged pair: causes marked proven or likely",
    )
    p.add_argument(
        "--budget", type=float, default=None, metavar="SECONDS", help="with --bisect: per pair"
    )

    p = verb("ci", cmd_ci, "write a CI workflow from the spec's [ci] table")
    p.add_argument("provider", choices=("github", "gitlab"))
    p.add_argument("--check", action="store_true", help="exit 1 if the workflow is out of date")
    p.add_argument("--force", action="store_true", help="overwrite a workflow edited by hand")
    return parser


def _version() -> str:
    from orchestrator import __version__

    return f"envparity {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return 0 if exc.code in (0, None) else 2
    try:
        return int(args.handler(args))
    except EnvparityError as exc:
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading (| head)
        return 0
    except OSError as exc:  # a path given to a command that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        _err(f"{where}{exc.strerror or exc}")
        return 2
