"""``sage-queue`` / ``python -m sage_queue``: look at and clean up the queues
of this machine.

    sage-queue list [--prefix P]             every queue in /dev/shm
    sage-queue stat NAME                     all statistics of one queue
    sage-queue watch NAME [--interval S] [--count N]
                                             refreshing put/get rates
    sage-queue rm NAME [NAME...]             remove queues
    sage-queue gc [--prefix P] [--dry-run] [--all-users]
                                             remove queues no live process has open

``--json`` (before or after the subcommand) prints JSON for scripts instead
of tables. Exit status: 0 ok, 1 error (the message is on stderr), including
bad usage. Attached processes are counted from the kernel's locks and never
include the CLI itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any, Dict, List, NoReturn, Optional, Sequence, TextIO

from . import admin
from .errors import SageQueueError
from .queue import SHM_DIR, SageQueue

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_ERROR = 1


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors exiting 1 like every other error."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


class _Failure(Exception):
    """An error to report on stderr with exit status 1."""


def _prog() -> str:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m sage_queue" if argv0 in ("__main__.py", "-m", "") else "sage-queue"


def build_parser() -> argparse.ArgumentParser:
    """The command line parser (exposed for documentation and tests)."""
    json_flag = _Parser(add_help=False)
    # SUPPRESS: a --json given before the subcommand is not reset by its parser.
    json_flag.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                           help="print JSON instead of a table")
    parser = _Parser(prog=_prog(), description="Inspect and clean up sage_queue shared-memory queues "
                     f"(objects {admin.object_path('<name>')}).", parents=[json_flag])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("list", parents=[json_flag], help="list every queue: size, fill, messages, attached "
                       "processes, owner, creator, status")
    p.add_argument("--prefix", default="", help="only queues whose name starts with PREFIX")

    p = sub.add_parser("stat", parents=[json_flag], help="all statistics of one queue")
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("watch", parents=[json_flag], help="a refreshing line of put/get rates per second")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    p.add_argument("--count", type=int, default=0, help="stop after N refreshes (default: until Ctrl-C)")

    p = sub.add_parser("rm", parents=[json_flag], help="remove queues (processes that have them open keep "
                       "working until they close them)")
    p.add_argument("names", metavar="NAME", nargs="+")

    p = sub.add_parser("gc", parents=[json_flag], help="remove the queues no live process has open")
    p.add_argument("--prefix", default="", help="only queues whose name starts with PREFIX")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--all-users", action="store_true", help="also other users' queues (default: only yours)")
    return parser


# ---------------------------------------------------------------- formatting


def _size(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n}B"


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _creator(info: admin.QueueInfo) -> str:
    if info.creator_pid is None:
        return "-"
    state = {True: "alive", False: "dead", None: "?"}[info.creator_alive]
    return f"{info.creator_pid} ({state})"


def _table(rows: List[List[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")


def _print_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    infos = admin.scan_queues(args.prefix)
    if args.json:
        _print_json([info.to_dict() for info in infos], out)
        return EXIT_OK
    if not infos:
        out.write(f"no queues in {SHM_DIR}" + (f" starting with {args.prefix!r}" if args.prefix else "") + "\n")
        return EXIT_OK
    rows = [["NAME", "SIZE", "FILL", "MESSAGES", "ATTACHED", "OWNER", "CREATOR", "STATUS"]]
    for info in infos:
        size = info.ring_bytes if info.opened else info.object_bytes
        status = info.status if info.status == "ok" else f"{info.status}: {info.detail}" if info.detail else info.status
        rows.append([
            info.name,
            _size(size),
            "-" if info.fill_percent is None else f"{info.fill_percent:.1f}%",
            _or_dash(info.messages),
            _or_dash(info.attached),
            _or_dash(info.owner),
            _creator(info),
            status + _side_note(info),
        ])
    _table(rows, out)
    return EXIT_OK


def _side_note(info: admin.QueueInfo) -> str:
    """What the STATUS column adds for items larger than the ring."""
    if not info.side_objects:
        return ""
    n = info.side_objects
    return f" (+{n} side object{'s' if n != 1 else ''}, {_size(info.side_bytes)})"


def cmd_stat(args: argparse.Namespace, out: TextIO) -> int:
    stats = admin.queue_stats(args.name)
    if args.json:
        _print_json(stats, out)
        return EXIT_OK
    width = max(map(len, stats))
    for key in sorted(stats):
        value = stats[key]
        if key == "utilization":
            value = f"{value:.4f}"
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        out.write(f"{key.ljust(width)}  {_or_dash(value)}\n")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    if not args.interval > 0:
        raise _Failure(f"--interval must be a positive number of seconds, not {args.interval}")
    if args.count < 0:
        raise _Failure(f"--count must be >= 0, not {args.count}")
    admin.inspect_queue(args.name, open_queue=False)  # QueueNotFoundError with the path
    # Watching keeps the queue open (attached) between refreshes; reopening
    # it every time would be no lighter for the queue.
    q = SageQueue.open(args.name)
    interactive = out.isatty() and not args.json
    try:
        last = q.get_stats()
        last_time = time.monotonic()
        done = 0
        while args.count == 0 or done < args.count:
            # The sampling period itself (rates need two samples), not a
            # wait for a condition: nothing to be woken by.
            _period.wait(args.interval)
            stats = q.get_stats()
            now = time.monotonic()
            elapsed = max(now - last_time, 1e-9)
            # Deltas clamp at 0: reset_stats() elsewhere may lower counters.
            put_rate = max(0, int(stats["messages_in"]) - int(last["messages_in"])) / elapsed
            get_rate = max(0, int(stats["messages_out"]) - int(last["messages_out"])) / elapsed
            last, last_time = stats, now
            done += 1
            # The library's count of processes holding the queue open, less
            # this one (whose handle is one of them). Not /proc/locks pids
            # minus os.getpid(): in a container whose /proc shows another pid
            # namespace's numbers, our own lock carries a pid that is not
            # os.getpid(), and the watcher would count itself.
            attached = max(0, int(stats["attached_processes"]) - 1)
            sample: Dict[str, Any] = {
                "time": time.time(),
                "name": args.name,
                "messages": int(stats["message_count"]),
                "fill_percent": round(100.0 * float(stats["utilization"]), 2),
                "put_rate": round(put_rate, 1),
                "get_rate": round(get_rate, 1),
                "attached": attached,
            }
            if args.json:
                out.write(json.dumps(sample, sort_keys=True) + "\n")
            else:
                line = (f"{time.strftime('%H:%M:%S')}  {args.name}  messages {sample['messages']}  "
                        f"fill {sample['fill_percent']:.1f}%  put {put_rate:,.1f}/s  get {get_rate:,.1f}/s  "
                        f"attached {attached}")
                # On a terminal one line refreshes in place; in a pipe each
                # refresh is a line of its own.
                out.write(f"\r\x1b[K{line}" if interactive else line + "\n")
            out.flush()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch normally ends
    finally:
        q.close()
        if interactive:
            out.write("\n")
    return EXIT_OK


def cmd_rm(args: argparse.Namespace, out: TextIO) -> int:
    removed: List[Dict[str, Any]] = []
    failed: List[Dict[str, str]] = []
    for name in args.names:
        try:
            holders = admin.remove_queue(name)
        except (SageQueueError, OSError) as exc:
            failed.append({"name": name, "error": str(exc)})
            sys.stderr.write(f"{_prog()}: error: {exc}\n")
            continue
        removed.append({"name": name, "still_attached_pids": holders})
        if not args.json:
            note = ""
            if holders:
                note = (f" ({len(holders)} process{'es' if len(holders) != 1 else ''} still had it open: "
                        f"{', '.join(map(str, holders))}; they keep working until they close it)")
            out.write(f"removed {name}{note}\n")
    if args.json:
        _print_json({"removed": removed, "failed": failed}, out)
    return EXIT_ERROR if failed else EXIT_OK


def cmd_gc(args: argparse.Namespace, out: TextIO) -> int:
    report = admin.collect_garbage(args.prefix, dry_run=args.dry_run, all_users=args.all_users)
    if args.json:
        _print_json(report.to_dict(), out)
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    for name in report.removed:
        out.write(f"{verb} {name} (no live process attached)\n")
    for name, reason, _pids in report.kept:
        out.write(f"kept {name}: {reason}\n")
    for name, count in report.side_objects_removed.items():
        out.write(f"removed {count} side object{'s' if count != 1 else ''} of {name} "
                  "(items larger than the ring of dead processes)\n")
    out.write(f"{len(report.removed)} {verb}, {len(report.kept)} kept\n")
    return EXIT_OK


#: Never set: waiting on it is a plain, interruptible pause between samples.
_period = threading.Event()

_COMMANDS = {"list": cmd_list, "stat": cmd_stat, "watch": cmd_watch, "rm": cmd_rm, "gc": cmd_gc}


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    """Runs the CLI; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "json"):
        args.json = False
    out = out or sys.stdout
    try:
        return _COMMANDS[args.command](args, out)
    except BrokenPipeError:  # e.g. `sage-queue list | head`
        return EXIT_OK
    except (_Failure, SageQueueError, OSError) as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return EXIT_ERROR
