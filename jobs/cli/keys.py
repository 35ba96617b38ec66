"""`metering keys create|list|revoke`: API keys of the ingestion service (jobs/ingest/keys.py)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from jobs.cli.common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subcommands, add_format, load_config_arg, print_result


def _described(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "customers": list(key.customers) if key.customers is not None else None,
        "created_at": datetime.fromtimestamp(key.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "revoked": key.revoked,
    }


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Create a key: its text on stdout, once (the register keeps its SHA-256 only)."""
    from jobs.ingest.keys import KeyProblem, KeyStore

    config = load_config_arg(args.config, require_meters=False)
    customers = [c for text in args.customers or () for c in text.split(",") if c]
    try:
        key, entry = KeyStore(config.ingest.keys).create(args.name, customers or None)
    except KeyProblem as exc:
        print(f"metering keys: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "json":
        print_result({"key": key, **_described(entry)}, "json")
    else:
        scope = f"customers {', '.join(entry.customers)}" if entry.customers else "every customer"
        print(f"key {entry.id} ({entry.name!r}) for {scope}; shown once, keep it secret", file=sys.stderr)
        print(key)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    from jobs.ingest.keys import KeyStore

    config = load_config_arg(args.config, require_meters=False)
    keys = [_described(k) for k in KeyStore(config.ingest.keys).listed()]
    if args.format == "json":
        print_result(keys, "json")
    elif not keys:
        print("no API keys")
    else:
        for k in keys:
            scope = ",".join(k["customers"]) if k["customers"] else "*"
            state = "revoked" if k["revoked"] else "active"
            print(f"{k['id']}  {state:<8} {k['name']}  customers={scope}  created {k['created_at']}")
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from jobs.ingest.keys import KeyStore

    config = load_config_arg(args.config, require_meters=False)
    if not KeyStore(config.ingest.keys).revoke(args.id):
        print(f"metering keys: no key {args.id!r} in {config.ingest.keys}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"revoked {args.id}")
    return EXIT_OK


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "keys",
        help="API keys of the ingestion API (`metering serve`): create, list, revoke",
        description="API keys for POST /v1/events (docs/ingest.md, 'API keys'): stored as SHA-256 hashes in "
        "ingest.keys, optionally scoped to customers, revoked without restarting the service.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key (printed once on stdout)")
    create.add_argument("--name", required=True, help="what the key is for (shown in listings and logs' key ids)")
    create.add_argument(
        "--customers",
        action="append",
        metavar="C[,C…]",
        help="send events for these customers only (repeatable or comma-separated; default: every customer)",
    )
    create.add_argument("--config", help=CONFIG_HELP)
    add_format(create, help="output: text (the key on stdout, default), or json (the key and its entry)")
    create.set_defaults(func=cmd_keys_create)
    listing = actions.add_parser("list", help="the keys, active or revoked (never the keys themselves)")
    listing.add_argument("--config", help=CONFIG_HELP)
    add_format(listing)
    listing.set_defaults(func=cmd_keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key by its id (takes effect at the next request)")
    revoke.add_argument("id", help="the key's id (`metering keys list`)")
    revoke.add_argument("--config", help=CONFIG_HELP)
    revoke.set_defaults(func=cmd_keys_revoke)
