"""`metering config validate FILE`: check a configuration file, listing every problem (jobs/config.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jobs.cli.common import EXIT_OK, EXIT_USAGE, Subcommands, add_format, print_result


def problems_document(file: str, problems: list[str]) -> dict[str, Any]:
    """An invalid configuration as JSON: each problem's path (e.g. ``meters[0].aggregation``) and message."""
    errors = []
    for problem in problems:
        path, sep, message = problem.partition(": ")
        errors.append({"path": path, "message": message} if sep else {"path": "", "message": problem})
    return {"file": file, "valid": False, "errors": errors}


def summarize(file: str) -> dict[str, Any]:
    """Load and validate ``file``; its summary (raises ConfigError listing every problem)."""
    from jobs.config import load_config
    from udfs.durations import format_duration

    config = load_config(Path(file))
    default = config.billing.default
    return {
        "file": file,
        "valid": True,
        "meters": [
            f"{m.name} ({m.aggregation.value} of {m.value} on {m.event_type}"
            + (f", by {', '.join(m.group_by)})" if m.group_by else ")")
            for m in config.meters
        ],
        "customers": sorted(config.billing.customers),
        "plans": sorted(config.billing.plans),
        "default_billing": f"{default.cycle.kind.value} anchored on {default.cycle.anchor}, "
        f"{default.cycle.timezone}, grace {format_duration(default.grace)}",
        "rating": {
            "default_plan": config.rating.default_plan,
            "plans": {name: sorted(plan.cards) for name, plan in sorted(config.rating.plans.items())},
            "customers": sorted(config.rating.customers),
        },
        "alerts": [
            f"{rule.name}: {rule.kind} of {rule.meter or 'the prepaid credit'} at {', '.join(f'{t:f}' for t in rule.thresholds)}"
            + (f" for {', '.join(sorted(rule.customers))}" if rule.customers is not None else "")
            + (f", webhook {rule.webhook.url}" if rule.webhook else "")
            for rule in config.alerts.rules
        ],
        "storage": repr(config.storage),
        "kafka_security": repr(config.kafka.security),
    }


def cmd_config(args: argparse.Namespace) -> int:
    """Validate a configuration file without running anything."""
    from jobs.config import ConfigError

    try:
        summary = summarize(args.file)
    except ConfigError as exc:
        if args.format != "json":
            raise  # main prints every problem on stderr and exits 2
        print(json.dumps(problems_document(args.file, exc.problems), indent=2))
        return EXIT_USAGE
    if args.format == "json":
        print_result(summary, "json")
    else:
        print(f"{args.file}: valid")
        for meter in summary["meters"]:
            print(f"  meter {meter}")
        print(f"  billing default: {summary['default_billing']}; {len(summary['customers'])} customer override(s)")
        rating = summary["rating"]
        for name, meters in rating["plans"].items():
            default = " (default)" if name == rating["default_plan"] else ""
            print(f"  rate plan {name}{default}: {', '.join(meters) or 'no meter priced'}")
        print(f"  storage: {summary['storage']}")
        print(f"  kafka security: {summary['kafka_security']}")
    return EXIT_OK


def register(sub: Subcommands) -> None:
    parser = sub.add_parser("config", help="check a configuration file")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = actions.add_parser(
        "validate",
        help="parse and validate FILE (plus METERING__* overrides); exit 2 listing every problem",
        description="Parse and validate a configuration file with METERING__SECTION__KEY environment overrides "
        "applied. Prints a summary, or every problem with its path; exits 2 when invalid.",
    )
    validate.add_argument("file", metavar="FILE")
    add_format(
        validate,
        help='output: text (default; problems on stderr), or json: the summary, or {"valid": false, "errors": '
        '[{"path", "message"}]} when invalid (exit 2), always on stdout',
    )
    parser.set_defaults(func=cmd_config)
