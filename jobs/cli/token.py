"""`metering token create|list|revoke`: access tokens for the operator and for one customer (clickhouse/access.py)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from jobs.cli.common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subcommands, add_format, load_config_arg, print_result


def _when(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _described(claims: Any, revoked: bool | None = None) -> dict[str, Any]:
    described = {
        "id": claims.jti,
        "scope": claims.scope,
        "customer": claims.customer,
        "meters": list(claims.meters) if claims.meters is not None else None,
        "issued_at": _when(claims.issued_at),
        "expires_at": _when(claims.expires_at),
    }
    if revoked is not None:
        described["revoked"] = revoked
    return described


def cmd_token_create(args: argparse.Namespace) -> int:
    """Issue a token: its text on stdout (the only copy: the register keeps its claims, not the token)."""
    from clickhouse.access import AccessError, issue
    from udfs.durations import parse_duration

    config = load_config_arg(args.config, require_meters=False)
    meters = [m for text in args.meters or () for m in text.split(",") if m]
    try:
        ttl_s = int(parse_duration(args.ttl).total_seconds())
    except ValueError as exc:
        print(f"metering token: --ttl {args.ttl!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    known = {m.name for m in config.meters}
    unknown = sorted(set(meters) - known) if known else []
    try:
        if unknown:
            raise AccessError(f"--meters: {', '.join(unknown)} not a meter of the configuration ({', '.join(sorted(known))})")
        key = config.access.key()
        token, claims = issue(
            key,
            scope="operator" if args.operator else "customer",
            ttl_s=ttl_s,
            customer=args.customer,
            meters=meters or None,
        )
    except AccessError as exc:
        print(f"metering token: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config.access.tokens().record(claims)
    if args.format == "json":
        print_result({"token": token, **_described(claims)}, "json")
    else:
        who = "operator" if claims.scope == "operator" else f"customer {claims.customer}"
        meters_text = f", meters {', '.join(claims.meters)}" if claims.meters else ""
        print(f"token {claims.jti} for {who}{meters_text}, expires {_when(claims.expires_at)}", file=sys.stderr)
        print(token)
    return EXIT_OK


def cmd_token_list(args: argparse.Namespace) -> int:
    """The tokens issued with this store: claims and whether revoked (never the tokens themselves)."""
    config = load_config_arg(args.config, require_meters=False)
    issued = [_described(entry.claims, entry.revoked) for entry in config.access.tokens().issued()]
    if args.format == "json":
        print_result(issued, "json")
    elif not issued:
        print("no tokens issued")
    else:
        for t in issued:
            state = "revoked" if t["revoked"] else "active"
            who = "operator" if t["scope"] == "operator" else f"customer {t['customer']}"
            meters = f" meters={','.join(t['meters'])}" if t["meters"] else ""
            print(f"{t['id']}  {state:<8} {who}{meters}  expires {t['expires_at']}")
    return EXIT_OK


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke a token by id: every process refuses it from its next request."""
    config = load_config_arg(args.config, require_meters=False)
    if not config.access.tokens().revoke(args.id):
        print(f"metering token: no token {args.id!r} was issued with {config.access.store}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"revoked {args.id}")
    return EXIT_OK


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "token",
        help="access tokens: operator, or one customer (optionally some meters)",
        description="Signed, expiring access tokens (docs/operations.md, 'Access tokens'). The signing key comes from "
        "METERING__ACCESS__SIGNING_KEY; the register and revocation list live in access.store.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="issue a token (printed once on stdout)")
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", help="a customer token: reads this customer's rows only")
    who.add_argument("--operator", action="store_true", help="an operator token: every customer, health, dead letters")
    create.add_argument("--ttl", default="30d", help="lifetime, e.g. 12h, 30d (1m to 366d; default 30d)")
    create.add_argument(
        "--meters", action="append", metavar="M[,M…]", help="with --customer: only these meters (repeatable or comma-separated)"
    )
    create.add_argument("--config", help=CONFIG_HELP)
    add_format(create)
    create.set_defaults(func=cmd_token_create)
    listing = actions.add_parser("list", help="the tokens issued, active or revoked (never the tokens themselves)")
    listing.add_argument("--config", help=CONFIG_HELP)
    add_format(listing)
    listing.set_defaults(func=cmd_token_list)
    revoke = actions.add_parser("revoke", help="revoke a token by its id (takes effect without a restart)")
    revoke.add_argument("id", help="the token's id (`metering token list`)")
    revoke.add_argument("--config", help=CONFIG_HELP)
    revoke.set_defaults(func=cmd_token_revoke)
