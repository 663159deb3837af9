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

from orchestrator.errors import EnvparityError, UsageError

Handler = Callable[[argparse.Namespace], int]


def _err(message: str) -> None:
    print(f"envparity: {message}" if "\n" not in message else f"envparity: error\n{message}",
          file=sys.stderr)


def _spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from orchestrator import spec

    return spec.load(args.spec)


# --------------------------------------------------------------------------- spec and files


def cmd_init(args: argparse.Namespace) -> int:
    from orchestrator import init

    target = Path(args.spec)
    text = init.spec_text(Path(args.from_file) if args.from_file else None, name=args.name)
    init.write_spec(target, text, force=args.force)
    print(f"wrote {target}")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from orchestrator import lock

    spec = _spec(args)
    if args.check:
        stale = lock.stale_locks(spec)
        for problem in stale:
            print(problem)
        if stale:
            print("run 'envparity lock' to update", file=sys.stderr)
        return 1 if stale else 0
    for path in lock.lock(spec, upgrade=args.upgrade, flavors=args.flavor or None):
        print(f"wrote {path}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from orchestrator import files, render

    spec = _spec(args)
    rendered = render.render_all(spec)
    if args.check:
        drift = files.drift(spec.root, rendered)
        for d in drift:
            sys.stdout.write(d.diff)
        if drift:
            print(f"{len(drift)} generated file(s) out of date; run 'envparity render'", file=sys.stderr)
        return 1 if drift else 0
    for path, status in files.write_all(spec.root, rendered, force=args.force):
        print(f"{status:>9} {path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    spec = _spec(args)
    from orchestrator import check

    report = check.check(spec)
    for line in report.lines:
        print(line)
    return report.exit_code


def cmd_doctor(args: argparse.Namespace) -> int:
    from orchestrator import doctor

    report = doctor.doctor(Path(args.spec))
    for line in report.lines:
        print(line)
    return report.exit_code


# --------------------------------------------------------------------------- probing


def cmd_probe(args: argparse.Namespace) -> int:
    raise UsageError("probe: not implemented yet")


def cmd_compare(args: argparse.Namespace) -> int:
    raise UsageError("compare: not implemented yet")


def cmd_capture(args: argparse.Namespace) -> int:
    raise UsageError("capture: not implemented yet")


def cmd_diff(args: argparse.Namespace) -> int:
    raise UsageError("diff: not implemented yet")


def cmd_run(args: argparse.Namespace) -> int:
    raise UsageError("run: not implemented yet")


def cmd_verify(args: argparse.Namespace) -> int:
    raise UsageError("verify: not implemented yet")


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="envparity",
        description="One environment.toml in: a pinned Nix flake, a devcontainer and hashed "
        "locks out, and a seeded probe proving every environment computes the same thing.",
    )
    parser.add_argument("--spec", default=os.environ.get("ENVPARITY_SPEC", "environment.toml"),
                        help="the spec file (default: environment.toml; env ENVPARITY_SPEC)")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = verb("init", cmd_init, "write environment.toml, from scratch or from an existing file")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="requirements.txt, environment.yml or a Poetry pyproject.toml")
    p.add_argument("--name", help="the environment name (default: the folder's name)")
    p.add_argument("--force", action="store_true", help="overwrite an existing spec")

    p = verb("lock", cmd_lock, "resolve with uv and write locks/<flavor>.txt with hashes")
    p.add_argument("--check", action="store_true", help="exit 1 if a lock is stale; write nothing")
    p.add_argument("--upgrade", action="store_true", help="ignore current pins; take newest allowed")
    p.add_argument("--flavor", action="append", metavar="FLAVOR", help="lock only this flavor")

    p = verb("render", cmd_render, "write flake.nix, .devcontainer/ and .env.example")
    p.add_argument("--check", action="store_true", help="print a diff and exit 1 on drift; write nothing")
    p.add_argument("--force", action="store_true", help="overwrite files edited by hand")

    verb("check", cmd_check, "lock --check + render --check + compatibility; writes nothing")
    verb("doctor", cmd_doctor, "audit this machine and repository against the spec")

    p = verb("probe", cmd_probe, "one seeded training run in this process; fingerprint to FILE")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--probe", metavar="MOD:FN", help="a user training function as the probe")

    p = verb("compare", cmd_compare, "verdict over fingerprints: 0 equivalent, 1 divergent")
    p.add_argument("fingerprints", nargs="+", metavar="FILE")

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
    p.add_argument("--fresh", action="store_true", help="rebuild environments, ignore cached fingerprints")
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
    except BrokenPipeError:
        return 0
