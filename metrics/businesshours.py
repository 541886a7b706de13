"""Seconds inside a team's business hours (weekly schedule in a time zone, minus holidays)."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from django.conf import settings

MAX_DAYS = 800  # safety bound for pathological spans


class Schedule:
    """An immutable, precomputed view of a BusinessHours row."""

    def __init__(self, tz: str, schedule: dict, holidays):
        self.tz = ZoneInfo(tz or settings.TIME_ZONE)
        self.week: dict[int, list[tuple[time, time]]] = {}
        for day, intervals in (schedule or {}).items():
            parsed = []
            for start, end in intervals or []:
                s, e = _parse(start), _parse(end)
                if e > s or end in ("24:00",):
                    parsed.append((s, e))
            self.week[int(day)] = parsed
        self.holidays = {date.fromisoformat(h) for h in holidays or []}

    @classmethod
    def from_model(cls, bh) -> "Schedule":
        return cls(bh.timezone, bh.schedule, bh.holidays)

    def intervals_on(self, day: date):
        """Aware (start, end) intervals of one local day."""
        if day in self.holidays:
            return []
        out = []
        for s, e in self.week.get(day.weekday(), []):
            start = datetime.combine(day, s, tzinfo=self.tz)
            end = (datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.tz) if e == time(0)
                   else datetime.combine(day, e, tzinfo=self.tz))
            out.append((start, end))
        return out

    def seconds_between(self, a: datetime, b: datetime) -> float:
        if b <= a:
            return 0.0
        day = a.astimezone(self.tz).date()
        last = b.astimezone(self.tz).date()
        total = 0.0
        n = 0
        while day <= last and n < MAX_DAYS:
            for s, e in self.intervals_on(day):
                lo, hi = max(a, s), min(b, e)
                if hi > lo:
                    total += (hi - lo).total_seconds()
            day += timedelta(days=1)
            n += 1
        return total

    def add_seconds(self, start: datetime, seconds: float) -> datetime | None:
        """The moment `seconds` business seconds after `start` (None if the schedule is empty)."""
        remaining = seconds
        day = start.astimezone(self.tz).date()
        for _ in range(MAX_DAYS):
            for s, e in self.intervals_on(day):
                lo = max(start, s)
                if e <= lo:
                    continue
                span = (e - lo).total_seconds()
                if span >= remaining:
                    return lo + timedelta(seconds=remaining)
                remaining -= span
            day += timedelta(days=1)
        return None


def _parse(value: str) -> time:
    if value == "24:00":
        return time(0)
    h, m = value.split(":")[:2]
    return time(int(h), int(m))


def schedules() -> dict[int, Schedule]:
    """team_id -> Schedule for every team with business hours."""
    from .models import BusinessHours

    return {bh.team_id: Schedule.from_model(bh) for bh in BusinessHours.objects.all()}


def business_seconds(a: datetime, b: datetime, schedule: Schedule | None) -> float:
    """Business seconds between a and b; wall-clock seconds without a schedule (KPI.md)."""
    if schedule is None:
        return max(0.0, (b - a).total_seconds())
    return schedule.seconds_between(a, b)


def local_day(at: datetime) -> date:
    """The day of `at` in the account's time zone (settings.TIME_ZONE)."""
    return at.astimezone(_tz(settings.TIME_ZONE)).date()


@lru_cache(maxsize=8)
def _tz(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _account_tz() -> ZoneInfo:
    return _tz(settings.TIME_ZONE)
