"""Business hours (chatbot_server/hours.py): open or not, the next opening, DST, 调休, validation."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chatbot_server.errors import ConfigError
from chatbot_server.hours import BusinessHours

from .helpers import make_settings

SH = ZoneInfo("Asia/Shanghai")
LONDON = ZoneInfo("Europe/London")
WEEK = {d: ["09:00-12:00", "13:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")}


def bank(**extra: Any) -> BusinessHours:
    return BusinessHours.build("Asia/Shanghai", WEEK, **extra)


def test_open_within_the_ranges_and_closed_at_lunch_at_night_and_at_weekends() -> None:
    hours = bank()
    monday = dt.datetime(2026, 12, 7, tzinfo=SH)
    assert hours.is_open(monday.replace(hour=9))
    assert hours.is_open(monday.replace(hour=11, minute=59))
    assert not hours.is_open(monday.replace(hour=12))  # the end is not included
    assert not hours.is_open(monday.replace(hour=8, minute=59))
    assert hours.is_open(monday.replace(hour=17, minute=30))
    assert not hours.is_open(monday.replace(hour=18))
    assert not hours.is_open(dt.datetime(2026, 12, 12, 10, tzinfo=SH))  # Saturday
    # The same moment given in UTC: 02:00 UTC is 10:00 in Shanghai.
    assert hours.is_open(dt.datetime(2026, 12, 7, 2, tzinfo=dt.UTC))


def test_next_opening_after_lunch_the_evening_and_the_weekend() -> None:
    hours = bank()
    assert hours.next_opening(dt.datetime(2026, 12, 7, 12, 30, tzinfo=SH)) == dt.datetime(2026, 12, 7, 13, tzinfo=SH)
    assert hours.next_opening(dt.datetime(2026, 12, 7, 19, tzinfo=SH)) == dt.datetime(2026, 12, 8, 9, tzinfo=SH)
    friday_night = dt.datetime(2026, 12, 11, 20, tzinfo=SH)
    opening = hours.next_opening(friday_night)
    assert opening == dt.datetime(2026, 12, 14, 9, tzinfo=SH)
    assert opening is not None and hours.describe_moment(opening) == "12月14日 周一 9:00"
    # While open, the next opening is the next span's start, never the present one.
    assert hours.next_opening(dt.datetime(2026, 12, 7, 9, tzinfo=SH)) == dt.datetime(2026, 12, 7, 13, tzinfo=SH)


def test_holidays_close_and_workdays_open_a_weekend() -> None:
    hours = bank(holidays=[dt.date(2026, 10, 1), "2026-10-02"], workdays={dt.date(2026, 10, 10): ["09:00-17:00"]})
    assert not hours.is_open(dt.datetime(2026, 10, 1, 10, tzinfo=SH))  # a Thursday, but 国庆
    assert not hours.is_open(dt.datetime(2026, 10, 2, 10, tzinfo=SH))
    assert hours.next_opening(dt.datetime(2026, 10, 1, 10, tzinfo=SH)) == dt.datetime(2026, 10, 5, 9, tzinfo=SH)
    saturday = dt.datetime(2026, 10, 10, 16, 30, tzinfo=SH)
    assert hours.is_open(saturday)
    assert not hours.is_open(saturday.replace(hour=17))
    assert hours.next_opening(dt.datetime(2026, 10, 9, 19, tzinfo=SH)) == dt.datetime(2026, 10, 10, 9, tzinfo=SH)


def test_dst_in_london_opening_hours_follow_the_wall_clock() -> None:
    hours = BusinessHours.build("Europe/London", {"sun": ["00:30-02:00", "09:00-17:00"], "mon": ["09:00-17:00"]})
    # 29 March 2026: clocks go from 01:00 GMT to 02:00 BST. 09:00 BST is 08:00 UTC.
    assert hours.is_open(dt.datetime(2026, 3, 29, 8, tzinfo=dt.UTC))
    assert not hours.is_open(dt.datetime(2026, 3, 29, 7, 30, tzinfo=dt.UTC))
    # In winter 09:00 local is 09:00 UTC.
    assert not hours.is_open(dt.datetime(2026, 1, 5, 8, 30, tzinfo=dt.UTC))
    assert hours.is_open(dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC))
    opening = hours.next_opening(dt.datetime(2026, 3, 28, 22, tzinfo=dt.UTC))
    assert opening == dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC)  # still GMT at 00:30
    # The Monday after: 09:00 BST = 08:00 UTC.
    monday = hours.next_opening(dt.datetime(2026, 3, 29, 20, tzinfo=dt.UTC))
    assert monday is not None and monday.astimezone(dt.UTC) == dt.datetime(2026, 3, 30, 8, tzinfo=dt.UTC)


def test_an_opening_inside_the_spring_forward_gap_opens_after_it() -> None:
    hours = BusinessHours.build("Europe/London", {"sun": ["01:30-03:00"]})
    opening = hours.next_opening(dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC))
    # 01:30 does not exist on 29 March in London: the first real moment after the gap.
    assert opening is not None and opening.astimezone(dt.UTC) == dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)
    assert opening.astimezone(LONDON).hour == 2


def test_describe_groups_days_alike() -> None:
    hours = BusinessHours.build("Asia/Shanghai", {**WEEK, "sat": ["09:00-12:00"], "sun": ["09:00-24:00"]})
    assert hours.describe() == "周一至周五 9:00–12:00、13:00–18:00;周六 9:00–12:00;周日 9:00–24:00"
    assert hours.is_open(dt.datetime(2026, 12, 13, 23, 59, tzinfo=SH))


def test_nothing_ever_open_has_no_next_opening() -> None:
    assert BusinessHours.build("Asia/Shanghai", {}).next_opening(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) is None


@pytest.mark.parametrize(
    ("hours", "key", "words"),
    [
        ({"timezone": "Mars/Olympus", "mon": ["09:00-12:00"]}, "agents.hours.timezone", "unknown time zone"),
        ({"timezone": "Asia/Shanghai", "mon": ["9-12"]}, "agents.hours.mon", "time ranges like"),
        ({"timezone": "Asia/Shanghai", "mon": ["09:00-25:00"]}, "agents.hours.mon", "bad time"),
        ({"timezone": "Asia/Shanghai", "mon": ["12:00-09:00"]}, "agents.hours.mon", "ends before it starts"),
        ({"timezone": "Asia/Shanghai", "tue": ["09:00-12:00", "11:00-13:00"]}, "agents.hours.tue", "overlap"),
        ({"timezone": "Asia/Shanghai", "holidays": ["2026-13-01"]}, "agents.hours.holidays", "a date like"),
        ({"timezone": "Asia/Shanghai", "workdays": {"2026-10-10": []}}, "agents.hours.workdays", "time ranges"),
        ({"mon": ["09:00-12:00"]}, "agents.hours.timezone", "must be set"),
        ({"timezone": "Asia/Shanghai", "monday": ["09:00-12:00"]}, "agents.hours.monday", "unknown key"),
    ],
)
def test_bad_hours_are_refused_naming_the_setting(hours: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(agents={"hours": hours})
    assert caught.value.key == key
    assert words in str(caught.value)


def test_weekday_check_of_the_pure_module() -> None:
    with pytest.raises(ConfigError, match="unknown weekday 'funday'"):
        BusinessHours.build("Asia/Shanghai", {"funday": ["09:00-12:00"]})


def test_yaml_dates_are_read_as_dates() -> None:
    import yaml

    from chatbot_server.config import settings_from_dict
    from chatbot_server.hours import from_settings

    data = yaml.safe_load(
        "agents:\n  hours:\n    timezone: Asia/Shanghai\n    fri: ['09:00-18:00']\n"
        "    holidays: [2026-10-02]\n    workdays: {2026-10-10: ['09:00-12:00']}\n"
    )
    hours = from_settings(settings_from_dict(data).agents.hours)
    assert hours is not None
    assert not hours.is_open(dt.datetime(2026, 10, 2, 10, tzinfo=SH))
    assert hours.is_open(dt.datetime(2026, 10, 10, 10, tzinfo=SH))
    assert from_settings(make_settings().agents.hours) is None  # no hours: always open
