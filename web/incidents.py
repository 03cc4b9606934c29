"""HTTP API of incidents and alert rules: what is down, and the webhooks told about it.

Both are scoped as reports are (`web.access`): a reader sees the incidents of its groups'
stores and its own rules only; anything else is answered as if it did not exist (404).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import Select, bindparam, delete, func, select, text

import report
from engine import timestamps
from jobs import alerts, deliveries, snapshot
from jobs.options import scope_of
from models import (
    GROUP_ID_MAX_LENGTH,
    STORE_ID_MAX_LENGTH,
    AlertAttempt,
    AlertEvent,
    AlertRule,
    AlertState,
    DataState,
    Incident,
    KeyRole,
    Store,
    db,
    utcnow,
)
from web import access
from web.api import GROUP_ID_PATTERN, GROUP_ID_RULE, parse_group
from web.arguments import Choice, Integer, Matching, Text
from web.base import ApiError, allowed_to, bad_request, current_principal, duration, json_body
from web.openapi import NULLABLE_TEXT, error, json_response, operation

bp = Blueprint("incidents", __name__)

STATE = Choice(
    "state",
    "open (default), resolved, or all (open first)",
    default="open",
    choices=("open", "resolved", "all"),
)
LIMIT = Integer("limit", "at most this many incidents", minimum=1, maximum=1000, default=100)
STORE = Text(
    "store", "only this store's incidents (its id as loaded)", max_length=STORE_ID_MAX_LENGTH
)
GROUP = Matching(
    "group",
    "only incidents of this group's stores (a reader's own group; default: a reader's groups, "
    "an admin's every store)",
    max_length=GROUP_ID_MAX_LENGTH,
    min_length=1,
    pattern=GROUP_ID_PATTERN,
    what=f"a group id ({GROUP_ID_RULE})",
)
INCIDENT = {
    "type": "object",
    "required": [
        "store_id",
        "started_at",
        "started_local",
        "resolved_at",
        "business_downtime_seconds",
        "down_now",
    ],
    "properties": {
        "store_id": {"type": "string"},
        "started_at": {"type": "string", "description": "UTC, ISO-8601"},
        "started_local": {"type": "string", "description": "the store's local time, ISO-8601"},
        "resolved_at": {**NULLABLE_TEXT, "description": "UTC; null while open"},
        "business_downtime_seconds": {
            "type": "number",
            "minimum": 0,
            "description": "business time (hours minus closures) down so far",
        },
        "down_now": {
            "type": "boolean",
            "description": "open, and `now` is inside the store's business hours",
        },
    },
}
INCIDENT_LIST = {
    "type": "object",
    "required": ["now", "down_now", "incidents"],
    "properties": {
        "now": {**NULLABLE_TEXT, "description": "the latest committed poll evaluated"},
        "down_now": {"type": "integer", "minimum": 0, "description": "stores down now"},
        "incidents": {"type": "array", "items": INCIDENT},
    },
}


@bp.get("/incidents")
@operation(
    "Incidents (the report's outages) as of the latest poll: open first, then newest",
    args=[STATE, LIMIT, STORE, GROUP],
    responses={
        "200": json_response("incidents", INCIDENT_LIST),
        "400": error("state, limit or group is not valid"),
        "404": error("no such group (or not one of the key's groups)"),
    },
)
@allowed_to(KeyRole.READER)
def list_incidents() -> Response:
    state, limit, store_id, group = STATE.read(), LIMIT.read(), STORE.read(), GROUP.read()
    scope = access.report_scope(group)
    query = select(Incident, Store.external_id).join(Store, Store.id == Incident.store_key)
    query = within(query, scope)
    if store_id is not None:
        query = query.where(Store.external_id == store_id)
    if state != "all":
        query = query.where(Incident.is_open == (state == "open"))
    query = query.order_by(
        Incident.is_open.desc(), Incident.started_us.desc(), Store.external_id
    ).limit(limit)
    rows = db.session.execute(query).all()
    down = db.session.scalar(
        within(select(func.count(func.distinct(Incident.store_key))), scope).where(
            Incident.down_now
        )
    )
    evaluated = db.session.get(AlertState, 1)
    zones = store_zones([row.Incident.store_key for row in rows])
    return jsonify(
        {
            "now": _instant(evaluated.now_us if evaluated else None),
            "down_now": int(down or 0),
            "incidents": [describe_incident(row.Incident, row.external_id, zones) for row in rows],
        }
    )


def within(query: Select, scope: tuple[str, ...] | None) -> Select:
    """`query` of incidents, limited to the stores of `scope` now (None: every store)."""
    if scope is None:
        return query
    batch = db.session.scalar(select(DataState.last_batch).where(DataState.id == 1)) or 0
    return query.where(Incident.store_key.in_(snapshot.scope_members(scope, batch)))


def describe_incident(row: Incident, store_id: str, zones: dict[int, str]) -> dict[str, Any]:
    zone = zones.get(row.store_key, report.DEFAULT_TIMEZONE)
    local = pd.Timestamp(row.started_us, unit="us", tz="UTC").tz_convert(zone)
    return {
        "store_id": store_id,
        "started_at": timestamps.format_instant(row.started_us),
        "started_local": local.isoformat(),
        "resolved_at": _instant(row.resolved_us),
        "business_downtime_seconds": row.business_us / 1_000_000,
        "down_now": bool(row.down_now),
    }


def store_zones(store_keys: list[int]) -> dict[int, str]:
    """The current zone of each store (stores without one are absent: the default zone)."""
    if not store_keys:
        return {}
    query = text(
        "SELECT store_key, timezone_str FROM store_timezones "
        "WHERE store_key IN :keys AND retired_batch IS NULL"
    ).bindparams(bindparam("keys", expanding=True))
    return {int(key): zone for key, zone in db.session.execute(query, {"keys": store_keys})}


def _instant(micros: int | None) -> str | None:
    return None if micros is None else timestamps.format_instant(micros)


# --------------------------------------------------------------------------- rules

RULE_FIELDS = {"url", "secret", "after", "stale_after", "group"}
RULE_EXAMPLE = '{"url": "https://example.com/hook", "secret": "…", "after": "15m"}'
DURATION_PATTERN = (
    "^([1-9][0-9]{0,3}[sm]|[1-9][0-9]{0,2}h|[1-9][0-9]?d"
    "|PT[1-9][0-9]{0,3}[MS]|PT[1-9][0-9]{0,2}H|P[1-9][0-9]?D)$"
)
RULE_BODY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url", "secret", "after"],
    "properties": {
        "url": {
            "type": "string",
            "maxLength": 2048,
            "pattern": "^https?://[^/?#@\\s]+",
            "description": "http:// or https://; private, loopback and link-local addresses "
            "are refused unless ALERT_ALLOW_PRIVATE_URLS=1",
        },
        "secret": {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "description": "signs every body (HMAC-SHA256); never shown again",
        },
        "after": {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "business downtime an incident must reach to be announced",
        },
        "stale_after": {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "unknown time beyond this ends an incident (as the report option)",
        },
        "group": {
            "type": "string",
            "pattern": GROUP_ID_PATTERN,
            "description": (
                "watch only this group's stores (a reader's own group; default: a reader's "
                "groups, an admin's every store)"
            ),
        },
    },
}
RULE = {
    "type": "object",
    "required": ["id", "url", "after", "stale_after", "groups", "created_by", "created_at"],
    "properties": {
        "id": {"type": "integer"},
        "url": {"type": "string"},
        "after": {"type": "string"},
        "stale_after": NULLABLE_TEXT,
        "groups": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "the groups whose stores it watches (null: every store)",
        },
        "created_by": {**NULLABLE_TEXT, "description": "the name of the key that made it"},
        "created_at": {"type": "string"},
    },
}
MAX_RULE_ID = 2**31 - 1
RULE_ID_PARAMETER = {
    "name": "rule_id",
    "in": "path",
    "required": True,
    "description": "as returned by POST /alerts",
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_RULE_ID},
}


@bp.post("/alerts")
@operation(
    "Register a webhook told when a store's incident opens and when it is resolved",
    body={"required": True, "content": {"application/json": {"schema": RULE_BODY}}},
    responses={
        "201": json_response(
            "created",
            {"type": "object", "required": ["id"], "properties": {"id": RULE["properties"]["id"]}},
        ),
        "400": error("the body is not a valid rule, or the URL is refused"),
        "404": error("no such group (or not one of the key's groups)"),
        "413": error("the body is too large"),
    },
)
@allowed_to(KeyRole.READER)
def create_rule() -> Response:
    body = json_body(RULE_EXAMPLE)
    if body is None:
        raise bad_request(f"the body must be a JSON object such as {RULE_EXAMPLE}")
    unknown = sorted(set(body) - RULE_FIELDS)
    if unknown:
        accepted = ", ".join(sorted(RULE_FIELDS))
        raise bad_request(f"unknown field(s): {', '.join(unknown)}; accepted: {accepted}")
    url, secret = text_field(body, "url", 2048), text_field(body, "secret", 256)
    if "after" not in body:
        raise bad_request("after is required (a duration such as 15m)")
    after_us = duration("after", body["after"])
    stale_us = duration("stale_after", body["stale_after"]) if "stale_after" in body else None
    scope = access.report_scope(parse_group(body["group"]) if "group" in body else None)
    try:
        deliveries.check_url(url, bool(current_app.config["ALERT_ALLOW_PRIVATE_URLS"]))
    except deliveries.UnsafeUrl as exc:
        raise bad_request(str(exc)) from exc
    rule = AlertRule(
        url=url,
        secret=secret,
        after_us=after_us,
        stale_after_us=stale_us,
        created_at=utcnow(),
        created_now_us=snapshot.fix_snapshot(db.engine, None).now_us,
        scope=None if scope is None else json.dumps(list(scope)),
        created_by=current_principal().name,
    )
    db.session.add(rule)
    db.session.commit()
    alerts.evaluate_soon(current_app._get_current_object())  # open incidents may be owed
    response = jsonify({"id": rule.id})
    response.status_code = 201
    return response


def text_field(body: dict, name: str, max_length: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise bad_request(f"{name} must be a string of 1 to {max_length} characters")
    return value


RULE_LIST = {
    "type": "object",
    "required": ["alerts"],
    "properties": {"alerts": {"type": "array", "items": RULE}},
}


@bp.get("/alerts")
@operation(
    "The alert rules the key sees: a reader's own, every rule for an admin (never their secrets)",
    responses={"200": json_response("rules", RULE_LIST)},
)
@allowed_to(KeyRole.READER)
def list_rules() -> Response:
    rules = db.session.scalars(visible_rules(select(AlertRule)).order_by(AlertRule.id))
    return jsonify({"alerts": [describe_rule(rule) for rule in rules]})


def describe_rule(rule: AlertRule) -> dict[str, Any]:
    stale = rule.stale_after_us
    return {
        "id": rule.id,
        "url": rule.url,
        "after": timestamps.format_duration(rule.after_us),
        "stale_after": None if stale is None else timestamps.format_duration(stale),
        "groups": None if rule.scope is None else list(scope_of(rule) or ()),
        "created_by": rule.created_by,
        "created_at": rule.created_at.isoformat(timespec="seconds") + "Z",
    }


def visible_rules(query: Select) -> Select:
    """`query` of rules, limited to those the key sees: a reader its own, an admin all."""
    principal = current_principal()
    if principal.groups is None:
        return query
    return query.where(AlertRule.created_by == principal.name, AlertRule.created_by.is_not(None))


def find_rule(rule_id: int) -> AlertRule:
    """The rule, if the key sees it; another owner's is answered as a missing one."""
    query = visible_rules(select(AlertRule).where(AlertRule.id == rule_id))
    rule = db.session.scalar(query) if rule_id <= MAX_RULE_ID else None
    if rule is None:
        raise ApiError(404, "not_found", f"no alert rule with id {rule_id}")
    return rule


@bp.delete("/alerts/<int:rule_id>")
@operation(
    "Delete a rule; its events not yet delivered are dropped",
    path=[RULE_ID_PARAMETER],
    responses={"204": {"description": "deleted"}, "404": error("no rule with this id")},
)
@allowed_to(KeyRole.READER)
def delete_rule(rule_id: int) -> Response:
    find_rule(rule_id)
    db.session.execute(delete(AlertAttempt).where(AlertAttempt.rule_id == rule_id))
    db.session.execute(delete(AlertEvent).where(AlertEvent.rule_id == rule_id))
    db.session.execute(delete(AlertRule).where(AlertRule.id == rule_id))
    db.session.commit()
    return Response(status=204)


ATTEMPTS = Integer("limit", "at most this many attempts", minimum=1, maximum=1000, default=100)
ATTEMPT = {
    "type": "object",
    "required": ["event_id", "event", "store_id", "attempted_at", "status_code", "error"],
    "properties": {
        "event_id": {"type": "string"},
        "event": {"type": "string", "enum": [alerts.OPENED, alerts.RESOLVED]},
        "store_id": {"type": "string"},
        "delivery": {
            "type": "string",
            "description": "the event's state: Pending, Delivered, Failed",
        },
        "attempted_at": {"type": "string"},
        "status_code": {"type": ["integer", "null"]},
        "error": NULLABLE_TEXT,
    },
}
ATTEMPT_LIST = {
    "type": "object",
    "required": ["deliveries"],
    "properties": {"deliveries": {"type": "array", "items": ATTEMPT}},
}


@bp.get("/alerts/<int:rule_id>/deliveries")
@operation(
    "Every attempt to send the rule's events, newest first",
    path=[RULE_ID_PARAMETER],
    args=[ATTEMPTS],
    responses={
        "200": json_response("attempts", ATTEMPT_LIST),
        "400": error("limit is not valid"),
        "404": error("no rule with this id"),
    },
)
@allowed_to(KeyRole.READER)
def list_deliveries(rule_id: int) -> Response:
    find_rule(rule_id)
    limit = ATTEMPTS.read()
    query = (
        select(AlertAttempt, AlertEvent, Store.external_id)
        .join(AlertEvent, AlertEvent.id == AlertAttempt.event_row)
        .join(Store, Store.id == AlertEvent.store_key)
        .where(AlertAttempt.rule_id == rule_id)
        .order_by(AlertAttempt.id.desc())
        .limit(limit)
    )
    return jsonify(
        {
            "deliveries": [
                {
                    "event_id": event.event_id,
                    "event": event.event,
                    "store_id": store_id,
                    "delivery": str(event.status),
                    "attempted_at": attempt.attempted_at.isoformat(timespec="seconds") + "Z",
                    "status_code": attempt.status_code,
                    "error": attempt.error,
                }
                for attempt, event, store_id in db.session.execute(query).all()
            ]
        }
    )
