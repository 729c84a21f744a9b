"""The service's time: naive UTC to the second, as the database stores it.

Pure, so that the agent compares times as the database writes them without loading it.
"""
from __future__ import annotations

import datetime


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)


def older_than(moment: datetime.datetime | None, days: float, reference: datetime.datetime) -> bool:
    return moment is not None and (reference - moment).total_seconds() > days * 86400
