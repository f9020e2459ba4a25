"""``trainguard alerts`` and ``trainguard silence add|list|expire``: on-call's view of the store.

``alerts`` and ``silence list`` open the store read-only, so on an embedded store that a
worker owns they read through the worker's loopback endpoint (as ``db counts`` does).
``silence add`` and ``silence expire`` write, which that endpoint refuses by design:
against a worker-owned embedded store they stop with a clear error instead. Durations
(``30m``, ``2h``, ``1d``) and times (ISO 8601 with a timezone) are checked before the
store is opened; a bad one is a :class:`~trainguard.errors.ConfigError` naming it.

``silence add`` takes amtool-like matchers besides ``--job``/``--node``/``--check``
(``trainguard silence add --check gpu_throttled --node node-07 ...`` or
``trainguard silence add check=gpu_throttled node=node-07 ...``; ``!=``, ``=~``, ``!~``
too); an unknown check name or a bad regular expression is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trainguard.cli._common import (
    add_json_flag,
    add_store,
    os_user,
    parse_instant,
    print_json,
    store_url,
)
from trainguard.errors import ConfigError, StoreError
from trainguard.pipeline.alerts.config import (
    DEFAULT_MAX_INTEGRITY_SILENCE_S,
    Silence,
    integrity_silence_violation,
)
from trainguard.pipeline.alerts.matchers import MATCHER_NAMES, Matcher, parse_matcher

if TYPE_CHECKING:
    from trainguard.pipeline.store import Store, StoreUrl
    from trainguard.schemas.records import Alert

__all__ = ["register"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SEVERITY_ORDER = {"page": 0, "ticket": 1, "info": 2}
#: Summaries longer than this are cut in the table (``--json`` has them whole).
_SUMMARY_WIDTH = 72


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``alerts`` command and the ``silence`` command with its subcommands."""
    p = subparsers.add_parser(
        "alerts", help="list open alerts (and, with --all, recently resolved ones)",
        description="List the alerts whose latest state change within --since is firing, "
                    "pages first; with --all, also the episodes resolved within --since. "
                    "Reads the store read-only (through a running worker if it owns it).")
    add_store(p)
    p.add_argument("--all", action="store_true", help="also list recently resolved alerts")
    p.add_argument("--since", default="24h",
                   help="look back this far, e.g. 30m, 2h, 1d (default: %(default)s)")
    p.add_argument("--limit", type=int, default=50,
                   help="at most this many resolved alerts with --all (default: %(default)s)")
    add_json_flag(p, 'the alerts ({"open": [...]}, with --all also "resolved")')
    p.set_defaults(func=_alerts)

    silence = subparsers.add_parser(
        "silence", help="mute alerts of a job or node during planned work",
        description="Add, list or expire silences. An alert episode that starts inside a "
                    "silence is still recorded, as severity info, but pages no one. Each "
                    "silence records who (the operating-system user) and why (--reason).")
    sub = silence.add_subparsers(dest="silence_command", metavar="COMMAND", required=True)
    store = argparse.ArgumentParser(add_help=False)
    add_store(store)

    p = sub.add_parser("add", parents=[store],
                       help="silence a job, a node, a check, or any mix of them",
                       description="Silence alerts matching --job, --node, --check and the "
                                   "MATCHERs, all of them (at least a job, a node or a "
                                   "check). Integrity findings stay loud unless --integrity "
                                   "is given. Who adds it is the operating-system user "
                                   "running this command. Example: trainguard silence add "
                                   "--check gpu_throttled --node node-07 --duration 2h "
                                   "--reason 'fan swap, TICKET-123'")
    p.add_argument("matchers", nargs="*", metavar="MATCHER",
                   help="amtool-style NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX "
                        f"(regexes match the whole value); NAME is one of "
                        f"{', '.join(MATCHER_NAMES)}; e.g. check=gpu_throttled node=node-07")
    p.add_argument("--job", help="the job to silence (default: any job)")
    p.add_argument("--node", help="the node to silence (default: any node)")
    p.add_argument("--check", help="the check to silence, e.g. gpu_throttled (default: any)")
    until = p.add_mutually_exclusive_group(required=True)
    until.add_argument("--duration", help="how long from --start, e.g. 30m, 2h, 1d")
    until.add_argument("--until", help="end time, ISO 8601 with timezone, e.g. 2025-01-31T18:00Z")
    p.add_argument("--start", help="start time, ISO 8601 with timezone (default: now)")
    p.add_argument("--reason", required=True, help="why, e.g. a maintenance ticket")
    p.add_argument("--integrity", action="store_true",
                   help="also mute integrity findings (checksums, digests, fingerprints, "
                        "conflicting reports: evidence of sabotage); such a silence must end "
                        f"within {DEFAULT_MAX_INTEGRITY_SILENCE_S / 3600:g}h of its start")
    p.set_defaults(func=_silence_add)

    p = sub.add_parser("list", parents=[store], help="silences active now or planned")
    p.add_argument("--all", action="store_true", help="also list expired silences")
    add_json_flag(p, 'the silences ({"silences": [{..., "state"}]}, times as epoch seconds)')
    p.set_defaults(func=_silence_list)

    p = sub.add_parser("expire", parents=[store], help="end a silence now")
    p.add_argument("silence_id", metavar="ID", help="as shown by `trainguard silence list`")
    p.set_defaults(func=_silence_expire)


# -- alerts ------------------------------------------------------------------------------


def _alerts(args: argparse.Namespace) -> int:
    from trainguard.pipeline.alerts.history import open_alerts, recent_alerts
    from trainguard.pipeline.store import open_store

    window = _duration("--since", args.since)
    if args.limit < 1:
        raise ConfigError(f"--limit {args.limit}; expected an integer >= 1")
    url = store_url(args.store)
    since = time.time() - window
    with open_store(url, read_only=True) as store:
        _require(store, "alerts")
        firing = open_alerts(store, since)
        resolved = (
            [a for a in recent_alerts(store, since, args.limit) if a.status == "resolved"]
            if args.all else []
        )
    # Pages first, then the longest-firing: what on-call should look at first.
    firing.sort(key=lambda a: (_SEVERITY_ORDER.get(a.severity, 9), a.starts_at))
    if args.json:
        doc: dict[str, Any] = {"open": firing}
        if args.all:
            doc["resolved"] = resolved
        print_json(doc)
        return 0
    if firing:
        print(f"open alerts ({len(firing)}), changed in the last {args.since}:")
        print(_alert_table(firing, resolved=False))
    else:
        print(f"no open alerts (no alert fired in the last {args.since} and is still firing)")
    if args.all:
        print()
        if resolved:
            print(f"resolved in the last {args.since} ({len(resolved)}, newest first):")
            print(_alert_table(resolved, resolved=True))
        else:
            print(f"no alerts resolved in the last {args.since}")
    return 0


def _alert_table(alerts: Sequence[Alert], *, resolved: bool) -> str:
    from trainguard.cli.db import format_table

    columns = ["severity", "check", "job", "node", "rank", "started",
               "ended" if resolved else "last_seen", "summary", "alert_id"]
    rows = []
    for a in alerts:
        last_seen = a.evidence.get("last_seen")
        end = a.ends_at if resolved else (last_seen if isinstance(last_seen, float) else a.ts)
        severity = a.severity + (" (silenced)" if "silenced" in a.labels
                                 else " (approved)" if "approved" in a.labels else "")
        rows.append((
            severity, a.check, a.job_id or "-", a.node or "-",
            str(a.rank) if a.rank is not None else "-",
            _clock(a.starts_at), _clock(end) if end is not None else "-",
            _cut(a.summary), a.alert_id,
        ))
    return format_table(columns, rows)


# -- silences ----------------------------------------------------------------------------


def _silence_add(args: argparse.Namespace) -> int:
    from trainguard.pipeline.alerts.silences import add_silence

    job, node, matchers = _matchers(args)
    if not (job or node or any(m.scopes and m.name == "check" for m in matchers)):
        raise ConfigError(
            "silence add needs --job, --node or --check (or job=, node=, check= matchers); "
            "muting a whole cluster would hide an outage"
        )
    now = time.time()
    start = parse_instant("--start", args.start) if args.start else now
    if args.duration is not None:
        end = start + _duration("--duration", args.duration)
    else:
        end = parse_instant("--until", args.until)
    created_by = os_user()
    # Checked before the store is opened, so a refusal does not depend on it.
    draft = Silence(
        silence_id="new", job_id=job, node=node, starts_at=start, ends_at=end,
        reason=args.reason, created_by=created_by, integrity=args.integrity, matchers=matchers)
    refused = integrity_silence_violation(draft, DEFAULT_MAX_INTEGRITY_SILENCE_S)
    if refused is not None:
        raise ConfigError(f"refused by the {refused}")
    url = store_url(args.store)
    with _open_for_writing(url, "silence add") as store:
        _require(store, "silences")
        silence = add_silence(
            store, job_id=job, node=node, starts_at=start, ends_at=end,
            reason=args.reason, created_by=created_by, now=now, integrity=args.integrity,
            matchers=matchers,
        )
    print(f"added {silence.silence_id}: {_scope(silence)} from {_clock(silence.starts_at)} "
          f"until {_clock(silence.ends_at)} ({silence.reason}; by {silence.created_by})")
    return 0


def _silence_list(args: argparse.Namespace) -> int:
    from trainguard.cli.db import format_table
    from trainguard.pipeline.alerts.silences import list_silences
    from trainguard.pipeline.store import open_store

    now = time.time()
    with open_store(store_url(args.store), read_only=True) as store:
        _require(store, "silences")
        silences = list_silences(store, now, include_expired=args.all)
    if args.json:
        print_json({"silences": [
            {**asdict(s), "matchers": [str(m) for m in s.matchers], "state": _state(s, now)}
            for s in silences]})
        return 0
    if not silences:
        print("no silences" if args.all else "no active or planned silences")
        return 0
    rows = [
        (s.silence_id, _state(s, now), s.job_id or "any", s.node or "any",
         " ".join(map(str, s.matchers)) or "-",
         _clock(s.starts_at), _clock(s.ends_at), _by(s), "yes" if s.integrity else "no",
         _cut(s.reason))
        for s in silences
    ]
    print(format_table(["silence_id", "state", "job", "node", "matchers", "starts", "ends",
                        "by", "integrity", "reason"], rows))
    return 0


def _silence_expire(args: argparse.Namespace) -> int:
    from trainguard.pipeline.alerts.silences import expire_silence

    url = store_url(args.store)
    with _open_for_writing(url, "silence expire") as store:
        _require(store, "silences")
        silence = expire_silence(store, args.silence_id, time.time(), by=os_user())
    print(f"expired {silence.silence_id} ({_scope(silence)}) at {_clock(silence.ends_at)}")
    return 0


# -- helpers -----------------------------------------------------------------------------


def _open_for_writing(url: StoreUrl, what: str) -> Store:
    """Open ``url`` writable, or explain why a worker-owned embedded store cannot be."""
    from trainguard.pipeline.store import open_store, owner_reader

    if url.embedded:
        # chdb locks the directory to its owner: a running worker takes operator rows
        # (silences) through its loopback endpoint, and reads the same way.
        reader = owner_reader(url)
        if reader is not None:
            return reader
    try:
        return open_store(url)
    except StoreError as exc:
        # An owner without a read endpoint (another CLI, a worker starting up): ChdbStore
        # reports chdb's directory lock with this phrase.
        if url.embedded and "already open in another process" in str(exc):
            raise _owned(url, what, None) from None
        raise


def _owned(url: StoreUrl, what: str, pid: int | None) -> StoreError:
    who = f"a running worker (pid {pid})" if pid is not None else "another process"
    return StoreError(
        f"{what} writes to the store, but the embedded store {url.path} is owned by {who}, "
        "which serves reads only; run it against the ClickHouse server (--store "
        "http(s)://HOST:PORT/DB) or stop the worker first"
    )




def _duration(flag: str, text: str) -> float:
    """Seconds in ``text`` such as 90s, 30m, 2h, 1.5d."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            f"{flag} {text!r} is not a duration; expected a number > 0 and a unit s, m, h "
            "or d, e.g. 30m, 2h, 1d"
        )
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _by(s: Silence) -> str:
    if s.updated_by and s.updated_by != s.created_by:
        return f"{s.created_by} (ended by {s.updated_by})"
    return s.created_by


def _state(s: Silence, now: float) -> str:
    if s.ends_at <= now:
        return "expired"
    return "active" if s.starts_at <= now else "planned"


def _scope(s: Silence) -> str:
    if s.matchers:
        parts = [f"{k}={v}" for k, v in (("job", s.job_id), ("node", s.node)) if v]
        scope = " ".join([*parts, *(str(m) for m in s.matchers)])
    else:
        scope = f"job={s.job_id or 'any'} node={s.node or 'any'}"
    return scope + (" including integrity findings" if s.integrity else "")


def _matchers(args: argparse.Namespace) -> tuple[str | None, str | None, tuple[Matcher, ...]]:
    """``--job``, ``--node`` and the matchers (``--check`` and MATCHERs), validated.

    ``job=X`` and ``node=X`` count as ``--job``/``--node`` unless those are given; with
    other matchers, :func:`~trainguard.pipeline.alerts.silences.fold_scope` stores them as
    matchers (so that an older worker cannot apply half of the silence).
    """
    job, node = args.job or None, args.node or None
    found = [parse_matcher(text) for text in args.matchers]
    if args.check is not None:
        found.insert(0, Matcher("check", "=", args.check))
    rest: list[Matcher] = []
    for m in found:
        if m.scopes and m.name == "job_id" and job is None:
            job = m.value
        elif m.scopes and m.name == "node" and node is None:
            node = m.value
        else:
            rest.append(m)
    return job, node, tuple(dict.fromkeys(rest))


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SUMMARY_WIDTH else text[: _SUMMARY_WIDTH - 1] + "…"


def _require(store: Store, table: str) -> None:
    from trainguard.pipeline.store.base import (
        require_table,  # heavy package: only when a command runs
    )

    require_table(store, table)
