"""Business hours of the human agents (agents.hours): open or not at a moment, and the next opening.

BusinessHours is pure: no I/O, no clock of its own (callers pass `at`); Availability adds the
clock and whether anyone is online. Weekly hours per weekday in one IANA time
zone, holidays (closed all day) and extra working days (调休: dates open with their own hours,
which Chinese banks have on some weekends). A date that is both is a working day.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
_RANGE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
#: How far ahead next_opening() looks (a year of holidays is not expected).
_HORIZON_DAYS = 400

Span = tuple[dt.time, dt.time]  # [start, end) in local time; end 00:00 means midnight


def _minutes(t: dt.time) -> int:
    return t.hour * 60 + t.minute


def _end_minutes(t: dt.time) -> int:
    return 24 * 60 if t == dt.time(0, 0) else _minutes(t)


def parse_ranges(values: Iterable[object], *, key: str) -> tuple[Span, ...]:
    """ "09:00-12:00" strings as sorted spans; ConfigError for bad times or overlapping ranges."""
    spans: list[Span] = []
    for value in values:
        match = _RANGE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ConfigError(f'must be time ranges like "09:00-12:00", got {value!r}', key=key)
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or not (h2 < 24 or (h2 == 24 and m2 == 0)):
            raise ConfigError(f"bad time in {value!r} (00:00..23:59, or 24:00 as an end)", key=key)
        start, end = dt.time(h1, m1), dt.time(0, 0) if h2 == 24 else dt.time(h2, m2)
        if _end_minutes(end) <= _minutes(start):
            raise ConfigError(f"{value!r} ends before it starts (ranges cannot cross midnight)", key=key)
        spans.append((start, end))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        if _minutes(start) < _end_minutes(end):
            raise ConfigError(f"ranges overlap at {start:%H:%M}", key=key)
    return tuple(spans)


def parse_date(value: object, *, key: str) -> dt.date:
    """A date given as 2026-10-01 (YAML reads it as a date already) or as that string."""
    if isinstance(value, dt.datetime):
        raise ConfigError(f"must be a date like 2026-10-01, got {value!r}", key=key)
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"must be a date like 2026-10-01, got {value!r}", key=key) from None


def _hm(t: dt.time, *, end: bool = False) -> str:
    return "24:00" if end and t == dt.time(0, 0) else f"{t.hour}:{t.minute:02d}"


@dataclass(frozen=True)
class BusinessHours:
    """When agents work: is_open(at), next_opening(at), and a sentence saying the hours."""

    zone: ZoneInfo
    weekly: tuple[tuple[Span, ...], ...]  # index 0 = Monday
    holidays: frozenset[dt.date] = frozenset()
    workdays: Mapping[dt.date, tuple[Span, ...]] | None = None

    @classmethod
    def build(
        cls,
        timezone: str,
        weekly: Mapping[str, Sequence[object]],
        holidays: Iterable[object] = (),
        workdays: Mapping[Any, Any] | None = None,
        *,
        key: str = "agents.hours",
    ) -> BusinessHours:
        """Check and build; ConfigError (naming the setting) for anything wrong."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"unknown time zone {timezone!r} (an IANA name such as Asia/Shanghai)", key=f"{key}.timezone"
            ) from None
        for day in weekly:
            if day not in WEEKDAYS:
                raise ConfigError(f"unknown weekday {day!r} (one of {', '.join(WEEKDAYS)})", key=f"{key}.{day}")
        days = tuple(parse_ranges(weekly.get(d, ()), key=f"{key}.{d}") for d in WEEKDAYS)
        closed = frozenset(parse_date(v, key=f"{key}.holidays") for v in holidays)
        extra: dict[dt.date, tuple[Span, ...]] = {}
        for when, ranges in (workdays or {}).items():
            date = parse_date(when, key=f"{key}.workdays")
            if not isinstance(ranges, list | tuple) or not ranges:
                raise ConfigError(f'{date}: must list time ranges like ["09:00-17:00"]', key=f"{key}.workdays")
            extra[date] = parse_ranges(ranges, key=f"{key}.workdays.{date}")
        return cls(zone, days, closed, extra)

    def spans_on(self, date: dt.date) -> tuple[Span, ...]:
        """The opening spans of a local date: its 调休 hours, nothing on a holiday, else the weekday's."""
        if self.workdays and date in self.workdays:
            return self.workdays[date]
        if date in self.holidays:
            return ()
        return self.weekly[date.weekday()]

    def _local(self, at: dt.datetime) -> dt.datetime:
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        return at.astimezone(self.zone)

    def is_open(self, at: dt.datetime) -> bool:
        """Whether agents work at `at` (an aware datetime)."""
        local = self._local(at)
        minute = local.hour * 60 + local.minute
        return any(_minutes(s) <= minute < _end_minutes(e) for s, e in self.spans_on(local.date()))

    def next_opening(self, at: dt.datetime) -> dt.datetime | None:
        """When the next span starts after `at` (in the zone; None if nothing within a year).

        A local start time that a DST change skips opens at the first moment after the gap."""
        local = self._local(at)
        for offset in range(_HORIZON_DAYS):
            date = local.date() + dt.timedelta(days=offset)
            for start, _ in self.spans_on(date):
                # Normalised through UTC, so a wall time in a spring-forward gap moves past it.
                opening = dt.datetime.combine(date, start, tzinfo=self.zone)
                opening = opening.astimezone(dt.UTC).astimezone(self.zone)
                if opening > local:
                    return opening
        return None

    def describe(self) -> str:
        """The weekly hours in Chinese: 周一至周五 9:00–12:00、13:00–18:00;周六 9:00–12:00."""
        groups: list[tuple[int, int, tuple[Span, ...]]] = []
        for n, spans in enumerate(self.weekly):
            if not spans:
                continue
            if groups and groups[-1][1] == n - 1 and groups[-1][2] == spans:
                groups[-1] = (groups[-1][0], n, spans)
            else:
                groups.append((n, n, spans))
        parts = []
        for first, last, spans in groups:
            days = _DAY_NAMES[first] if first == last else f"{_DAY_NAMES[first]}至{_DAY_NAMES[last]}"
            hours = "、".join(f"{_hm(s)}–{_hm(e, end=True)}" for s, e in spans)
            parts.append(f"{days} {hours}")
        return ";".join(parts) or "暂无固定服务时间"

    def describe_moment(self, at: dt.datetime) -> str:
        """A moment as the chat says it: 12月8日 周二 9:00 (in the zone)."""
        local = self._local(at)
        return f"{local.month}月{local.day}日 {_DAY_NAMES[local.weekday()]} {_hm(local.timetz())}"


class HoursConfig(Protocol):
    """The agents.hours settings (config.model.HoursSettings)."""

    @property
    def timezone(self) -> str: ...

    @property
    def holidays(self) -> tuple[str, ...]: ...

    @property
    def workdays(self) -> Mapping[str, Any]: ...


def from_settings(settings: HoursConfig) -> BusinessHours | None:
    """Business hours from agents.hours; None when no timezone is set (always open)."""
    weekly = {day: getattr(settings, day) for day in WEEKDAYS if getattr(settings, day, ())}
    if not settings.timezone:
        if weekly or settings.holidays or settings.workdays:
            raise ConfigError("must be set when opening hours, holidays or workdays are", key="agents.hours.timezone")
        return None
    return BusinessHours.build(settings.timezone, weekly, settings.holidays, settings.workdays)


async def _always() -> bool:
    return True


class Availability:
    """Whether a handoff can be served now: business hours (None: always open) and anyone online.

    `anyone_online` is an async callable (default: always True; agent presence plugs in here);
    `clock` gives the aware "now" (tests set it instead of waiting for Monday)."""

    OFFLINE_TEXT = "当前暂无人工客服在线,您可以给我们留言,我们会尽快与您联系。"

    def __init__(
        self,
        hours: BusinessHours | None = None,
        *,
        anyone_online: Callable[[], Awaitable[bool]] = _always,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.hours = hours
        self.anyone_online = anyone_online
        self.clock = clock

    def closed_text(self) -> str | None:
        """The sentence for a handoff outside business hours, or None while open."""
        hours = self.hours
        if hours is None:
            return None
        now = self.clock()
        if hours.is_open(now):
            return None
        text = f"人工客服服务时间为{hours.describe()}"
        opening = hours.next_opening(now)
        if opening is not None:
            text += f",下次服务时间:{hours.describe_moment(opening)}"
        return text + "。您可以给我们留言,我们会在服务时间内尽快与您联系。"

    async def unavailable(self) -> tuple[Literal["hours", "offline"], str] | None:
        """Why no human can take a handoff now, and what to tell the user; None if one can."""
        text = self.closed_text()
        if text is not None:
            return "hours", text
        if not await self.anyone_online():
            return "offline", self.OFFLINE_TEXT
        return None
