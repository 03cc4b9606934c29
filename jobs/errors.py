"""Why a report cannot be started or served right now (the HTTP and CLI doors say it)."""

from __future__ import annotations


class QueueFull(Exception):
    """More reports are queued or running than the service accepts."""


class ReportNotFound(Exception):
    """No report has this id (or the id is malformed), or its table is gone."""


class ServiceBusy(Exception):
    """The database's write lock or the task broker is not available right now."""


class BrokerUnavailable(ServiceBusy):
    """The broker did not take a step within CELERY_CONNECT_TIMEOUT (tries included)."""
