"""``trainguard change approve|list|revoke``: sanction a job's code/env or seed change.

A job that restarts into other code (or other seeds) raises ``code_changed`` (or
``restart_divergence``), which pages: the worker cannot tell a release from tampering.
``change approve --job J --fingerprint F --reason R`` records that ``F`` is sanctioned for
``J`` (who: the operating-system user running the command; why: ``--reason``), before the
restart or after the page; the alert lifecycle then records such findings as ``info``
and resolves a page already firing. ``change revoke ID`` withdraws one (the next episode
pages again). Rows go to the ``change_approvals`` table, through a running worker's
endpoint when it owns the embedded store, as for silences.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

from trainguard.cli._common import add_json_flag, add_store, os_user, print_json, store_url
from trainguard.cli.alerts import _clock, _cut, _open_for_writing, _require

__all__ = ["register"]

_TABLE = "change_approvals"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``change`` command with its subcommands."""
    change = subparsers.add_parser(
        "change", help="approve a job's code/env or seed change (change audit)",
        description="Approve, list or revoke sanctioned changes. A code_changed (or seed "
                    "restart_divergence) finding whose fingerprint is approved for its job "
                    "is recorded as severity info instead of paging, also after it paged. "
                    "Each approval records who (the operating-system user) and why.")
    sub = change.add_subparsers(dest="change_command", metavar="COMMAND", required=True)
    store = argparse.ArgumentParser(add_help=False)
    add_store(store)

    p = sub.add_parser("approve", parents=[store], help="sanction a fingerprint for a job",
                       description="Example: trainguard change approve --job llm-7b "
                                   "--fingerprint 9f3a1c0e52d1b7a4 --reason 'release "
                                   "2.3, CHG-118'")
    p.add_argument("--job", required=True, help="the job the change is sanctioned for")
    p.add_argument("--fingerprint", required=True,
                   help="the new env (or seed) fingerprint, as the finding shows it "
                        "(evidence `fingerprint`)")
    p.add_argument("--reason", required=True, help="why, e.g. a release or change ticket")
    p.set_defaults(func=_approve)

    p = sub.add_parser("list", parents=[store], help="approvals in force (or all)")
    p.add_argument("--job", help="only this job's approvals")
    p.add_argument("--all", action="store_true", help="also list revoked approvals")
    add_json_flag(p, 'the approvals ({"approvals": [...]}, times as epoch seconds)')
    p.set_defaults(func=_list)

    p = sub.add_parser("revoke", parents=[store], help="withdraw an approval")
    p.add_argument("approval_id", metavar="ID", help="as shown by `trainguard change list`")
    p.set_defaults(func=_revoke)


def _approve(args: argparse.Namespace) -> int:
    from trainguard.pipeline.alerts.approvals import approve_change

    with _open_for_writing(store_url(args.store), "change approve") as store:
        _require(store, _TABLE)
        approval = approve_change(store, job_id=args.job, fingerprint=args.fingerprint,
                                  reason=args.reason, created_by=os_user(), now=time.time())
    print(f"approved {approval.approval_id}: job={approval.job_id} fingerprint="
          f"{approval.fingerprint} ({approval.reason}; by {approval.created_by})")
    return 0


def _list(args: argparse.Namespace) -> int:
    from trainguard.cli.db import format_table
    from trainguard.pipeline.alerts.approvals import list_approvals
    from trainguard.pipeline.store import open_store

    with open_store(store_url(args.store), read_only=True) as store:
        _require(store, _TABLE)
        approvals = list_approvals(store, args.job, include_revoked=args.all)
    if args.json:
        print_json({"approvals": [asdict(a) for a in approvals]})
        return 0
    if not approvals:
        print("no approvals" if args.all else "no approvals in force")
        return 0
    rows = [(a.approval_id, "revoked" if a.revoked else "in force", a.job_id, a.fingerprint,
             _clock(a.created_at), a.created_by + (f" (revoked by {a.updated_by})"
                                                    if a.revoked else ""), _cut(a.reason))
            for a in approvals]
    print(format_table(["approval_id", "state", "job", "fingerprint", "approved", "by",
                        "reason"], rows))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from trainguard.pipeline.alerts.approvals import revoke_approval

    with _open_for_writing(store_url(args.store), "change revoke") as store:
        _require(store, _TABLE)
        approval = revoke_approval(store, args.approval_id, time.time(), by=os_user())
    print(f"revoked {approval.approval_id} (job={approval.job_id} fingerprint="
          f"{approval.fingerprint}) by {approval.updated_by}")
    return 0
