"""What the key of a request may see: reports within its groups, stores of its groups.

A reader key has groups; an admin (API_TOKEN, an admin key, or no authentication at all) sees
everything. A report or store a reader may not see is answered exactly as one that does not
exist (404, same message): its existence is not revealed.
"""

from __future__ import annotations

from sqlalchemy import Select, exists, select

from jobs.options import scope_of
from models import Report, ReportGroup, StoreGroupMember, db
from web.base import ApiError, Principal, current_principal


def sees_report(row: Report, principal: Principal | None = None) -> bool:
    """Whether the report's scope lies within the principal's groups."""
    principal = principal or current_principal()
    if principal.groups is None:
        return True
    if row.scope is None:
        return False
    return set(scope_of(row) or ()) <= set(principal.groups)


def visible_reports(query: Select) -> Select:
    """`query` of reports, limited to those the principal sees (in SQL: a listing is bounded)."""
    groups = current_principal().groups
    if groups is None:
        return query
    foreign = exists().where(
        ReportGroup.report_id == Report.id, ReportGroup.group_id.not_in(list(groups))
    )
    return query.where(Report.scope.is_not(None), ~foreign)


def sees_store(store_key: int) -> bool:
    """Whether the store is in one of the principal's groups now."""
    groups = current_principal().groups
    if groups is None:
        return True
    member = db.session.scalar(
        select(StoreGroupMember.id)
        .where(
            StoreGroupMember.store_key == store_key,
            StoreGroupMember.group_id.in_(list(groups)),
            StoreGroupMember.retired_batch.is_(None),
        )
        .limit(1)
    )
    db.session.commit()
    return member is not None


def group_exists(group: str) -> bool:
    """Whether the group has stores now."""
    found = db.session.scalar(
        select(StoreGroupMember.id)
        .where(StoreGroupMember.group_id == group, StoreGroupMember.retired_batch.is_(None))
        .limit(1)
    )
    db.session.commit()
    return found is not None


MAX_LISTED_GROUPS = 1000


def current_groups() -> list[str]:
    """The ids of the groups that have stores now (the first MAX_LISTED_GROUPS, sorted)."""
    groups = db.session.scalars(
        select(StoreGroupMember.group_id)
        .where(StoreGroupMember.retired_batch.is_(None))
        .group_by(StoreGroupMember.group_id)
        .order_by(StoreGroupMember.group_id)
        .limit(MAX_LISTED_GROUPS)
    ).all()
    db.session.commit()
    return list(groups)


def report_scope(group: str | None) -> tuple[str, ...] | None:
    """The groups a report asked for covers: the named group (a reader's own; for an admin,
    one that has stores), else a reader's groups, else every store (None)."""
    principal = current_principal()
    if group is None:
        return principal.groups
    mine = principal.groups is None or group in principal.groups
    if not mine or (principal.groups is None and not group_exists(group)):
        raise ApiError(404, "not_found", f"no group named {group!r}")
    return (group,)
