"""The command line: a thin layer over the library (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import anyio

from agent.config import AgentConfig, load_config
from agent.errors import AgentError, ConfigError, StartupError
from agent.monitor.preflight import CPU_EXTRA
from agent.operator.operator_cli import add_verbs as add_operator_verbs
from agent.web.users_cli import add_verbs as add_web_user_verbs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    except Exception as exc:
        # A known failure is one line (--debug adds the traceback); an unexpected one is a
        # bug, so its traceback is printed too, above the one-line summary.
        line, known = describe_failure(exc)
        if args.debug or not known:
            traceback.print_exc()
        print(f"scanner-agent: {line}", file=sys.stderr)
        return 1


def describe_failure(exc: BaseException) -> tuple[str, bool]:
    """One line for what stopped the command, and whether it is a known failure, from the
    innermost cause: a task group wraps the real error in exception groups levels deep."""
    leaves = list(_leaves(exc))
    leaf = next((e for e in leaves if isinstance(e, AgentError)), leaves[0])
    if isinstance(leaf, AgentError):
        return str(leaf), True
    if isinstance(leaf, ModuleNotFoundError) and leaf.name == "onnxruntime":
        return f"triage needs onnxruntime, which is not installed: {CPU_EXTRA}", True
    if isinstance(leaf, OSError) and leaf.errno == errno.EADDRINUSE:
        return f"a listening port is in use by another process: {leaf.strerror}", True
    return f"{type(leaf).__name__}: {leaf}", False


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from _leaves(sub)
    else:
        yield exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanner-agent", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon in the foreground")
    _config_arg(run)
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate the config; exit 1 on error")
    _config_arg(check)
    check.add_argument(
        "--probe", action="store_true", help="also C-ECHO each DIMSE destination, connect the broker"
    )
    check.set_defaults(func=cmd_check_config)
    health = sub.add_parser("health", help="exit 0 when the agent for this config runs and serves")
    _config_arg(health)
    health.set_defaults(func=cmd_health)
    status = sub.add_parser("status", help="instances, series and queues, from the journal")
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="print the contract's JSON")
    status.set_defaults(func=cmd_status)
    _add_console(sub)
    add_operator_verbs(sub, _config_arg)
    add_web_user_verbs(sub, _config_arg)
    _add_inspect(sub)
    demo = sub.add_parser("demo", help="the whole loop on one machine with a simulated scanner")
    demo.add_argument("--seconds", type=float, default=60.0, help="stop after this long at most")
    demo.set_defaults(func=cmd_demo)
    for verb in sub.choices.values():  # ``run --debug`` as well as ``--debug run``
        verb.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    return parser


def _add_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inspect = sub.add_parser(
        "inspect", help="QC offline on files or folders: one verdict per series"
    )
    inspect.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    inspect.add_argument("--json", action="store_true", help="print Verdict JSON lines")
    inspect.add_argument("--protocols", type=Path, help="QC protocol file (default: qc.protocols)")
    _config_arg(inspect)
    inspect.set_defaults(func=cmd_inspect)


def _add_console(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    console = sub.add_parser("console", help="the technologist console (alerts, hold/release)")
    _config_arg(console)
    console.add_argument("--by", help="name recorded with each command (default: login name)")
    console.set_defaults(func=cmd_console)
    warm = sub.add_parser("warmup", help="compile the kernel cache ahead of the first start")
    warm.set_defaults(func=cmd_warmup)
    drift = sub.add_parser("drift", help="triage scores and QC metrics: window against baseline")
    drift.add_argument("pin", nargs="?", choices=["pin"], help="make the latest window the baseline")
    _config_arg(drift)
    drift.set_defaults(func=cmd_drift)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, help="YAML config file (default: the embedded default)"
    )


def _print_problems(exc: ConfigError) -> None:
    print(f"{exc.source}: {len(exc.problems)} error(s)", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def setup_logging(cfg: AgentConfig) -> None:
    handler = logging.StreamHandler()
    if cfg.logging.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=cfg.logging.level, handlers=[handler], force=True)
    for chatty in ("pynetdicom", "highdicom", "numba"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def cmd_run(args: argparse.Namespace) -> int:
    from agent.daemon import serve

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:  # a service log wants one line; check-config lists them
        raise StartupError([f"{exc.source}: {'; '.join(exc.problems)}"]) from exc
    setup_logging(cfg)
    logging.getLogger(__name__).info(
        "scanner-agent %s starting with %s; storage at %s",
        cfg.agent_id, args.config or "the embedded default config", cfg.storage_path,
    )  # fmt: skip
    anyio.run(functools.partial(serve, cfg, reload_config=lambda: load_config(args.config)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.daemon import serve
    from agent.operator.demo import run_demo

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("agent.alerts.notifier").setLevel(logging.CRITICAL + 1)  # the feed shows alerts
    return run_demo(args.seconds, serve)


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.monitor.checks import check_everything

    source = str(args.config or "<embedded default>")
    cfg = load_config(args.config)
    info, problems = check_everything(cfg, source)
    for line in info:
        print(line)
    ok = not problems
    if problems:
        _print_problems(ConfigError(source, problems))
    if args.probe:
        ok = _probe(cfg) and ok
    if ok:
        print(f"{source}: ok (agent_id {cfg.agent_id})")
    return 0 if ok else 1


def _probe(cfg: AgentConfig) -> bool:
    from agent.monitor.probe import probe_all

    results = probe_all(cfg)
    for ok, line in results:
        print(f"probe {'ok' if ok else 'FAILED'}: {line}", file=sys.stdout if ok else sys.stderr)
    if not results:
        print("probe: nothing to probe (no DIMSE destination, no broker)")
    return all(ok for ok, _ in results)


def cmd_health(args: argparse.Namespace) -> int:
    from agent.monitor.health import check_health

    ok, line = check_health(load_config(args.config))
    print(line, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def cmd_warmup(args: argparse.Namespace) -> int:
    import os
    import time

    from agent.warmup import warm_all_now

    start = time.perf_counter()
    warm_all_now()
    where = os.environ.get("NUMBA_CACHE_DIR") or "numba's default cache (set NUMBA_CACHE_DIR)"
    print(f"kernels compiled in {time.perf_counter() - start:.1f} s into {where}")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from agent.journal import drift_log, verdict_log
    from agent.journal.database import Journal
    from agent.monitor.drift import format_table, table

    cfg = load_config(args.config)
    path = cfg.storage_path / "journal.sqlite"
    if not path.exists():
        print(f"drift: no journal at {path}: has the agent run with this config?", file=sys.stderr)
        return 1
    journal = Journal.open(path)
    try:
        if args.pin:
            with journal.transaction() as db:
                print(f"drift: {drift_log.pin(db)} keys pinned to their latest window")
        with journal.reading() as db:
            print(format_table(table(db)))
            print(verdict_log.format_agreement(verdict_log.agreement(db)))
    finally:
        journal.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from agent.operator.status import format_text, read_status

    cfg = load_config(args.config)
    doc = read_status(
        cfg.storage_path / "journal.sqlite", [d.name for d in cfg.forward.destinations]
    )
    print(json.dumps(doc, indent=2) if args.json else format_text(doc))
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    import getpass

    from agent.operator.console import run_console

    cfg = load_config(args.config)
    logging.basicConfig(level=logging.WARNING, filename=os.devnull)  # the screen is the UI
    run_console(cfg, args.by or getpass.getuser())
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from agent.operator.inspect import run
    from agent.qc.protocols import load_protocols
    from agent.triage.engine import TriageEngine

    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config)
    path = args.protocols or cfg.qc.protocols
    engine = TriageEngine.start(cfg.triage, None) if cfg.triage.enabled else None
    return run(args.paths, load_protocols(path), as_json=args.json, triage=engine)
