"""What a user asks a report for (`as_of`, options) and how a report is named (its id)."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import report
from engine import timestamps
from models import AlertRule, Report

REPORT_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class ReportRequest:
    """What a user asks for: an optional `as_of`, the report options, the groups whose stores
    it covers (None: every store) and the key asking (None: the admin token or no key)."""

    as_of_us: int | None = None
    options: report.ReportOptions = field(default_factory=report.ReportOptions)
    groups: tuple[str, ...] | None = None
    created_by: str | None = None


def new_report_id() -> str:
    """128 random bits as 32 hex digits: unguessable, and safe in a file name."""
    return secrets.token_hex(16)


def is_valid_report_id(report_id: str) -> bool:
    return bool(REPORT_ID_PATTERN.fullmatch(report_id))


def options_json(options: report.ReportOptions) -> str:
    """The options as the report row stores them."""
    return json.dumps({"stale_after_us": options.stale_after_us, "outages": options.outages})


def options_of(row: Report) -> report.ReportOptions:
    stored = json.loads(row.options or "{}")
    return report.ReportOptions(stored.get("stale_after_us"), bool(stored.get("outages")))


def scope_json(groups: tuple[str, ...] | None) -> str | None:
    """The scope as the report row stores it: the sorted group ids, or None (every store)."""
    return None if groups is None else json.dumps(sorted(set(groups)))


def scope_of(row: Report | AlertRule) -> tuple[str, ...] | None:
    """The groups a report or alert rule covers (None: every store)."""
    return None if row.scope is None else tuple(json.loads(row.scope))


def describe_options(row: Report) -> dict[str, Any]:
    return options_as_written(options_of(row))


def options_as_written(options: report.ReportOptions) -> dict[str, Any]:
    """Options as a user writes them: `stale_after` as an ISO-8601 duration, `outages`."""
    stale = options.stale_after_us
    return {
        "stale_after": None if stale is None else timestamps.format_duration(stale),
        "outages": options.outages,
    }
