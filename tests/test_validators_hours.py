"""National number validators (python-stdnum), opening hours and the YAML reader's scalars."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from conftest import NN_1985
from crm_fixtures import BIS_1998, BIS_UNKNOWN_SEX, NN_2017, bad_checksum

from ivr.flow_model import HoursNode
from ivr.hours import open_state
from ivr.loader import LoadedFlow
from ivr.validators import VALIDATORS
from ivr.yamlsrc import load_yaml


@pytest.mark.parametrize(
    ("validator", "number", "valid"),
    [
        ("national_number", NN_1985, True),
        ("national_number", NN_2017, True),  # born after 2000: the checksum has a 2 in front
        ("national_number", BIS_1998, True),
        ("national_number", BIS_UNKNOWN_SEX, True),
        ("national_number", bad_checksum(NN_1985), False),
        ("national_number", "8507300332", False),  # one digit short
        ("national_number", "85133003328", False),  # month 13
        ("nn", BIS_1998, False),
        ("bis", BIS_1998, True),
        ("bis", NN_1985, False),
        ("digits", "0042", True),
    ],
)
def test_validators(validator: str, number: str, valid: bool) -> None:
    assert VALIDATORS[validator].check(number) is valid


def test_national_number_validators_are_sensitive() -> None:
    assert all(VALIDATORS[n].sensitive for n in ("national_number", "nn", "bis"))
    assert not VALIDATORS["digits"].sensitive


@pytest.mark.parametrize(
    ("when", "is_open", "reason"),
    [
        ("2026-11-23T08:29:59+01:00", False, "outside_hours"),
        ("2026-11-23T08:30:00+01:00", True, "open"),
        ("2026-11-23T12:45:00+01:00", False, "outside_hours"),  # lunch
        ("2026-11-26T16:29:00+01:00", True, "open"),  # Thursday afternoon
        ("2026-11-27T16:10:00+01:00", False, "outside_hours"),  # Friday closes at 16:00
        ("2026-11-23T09:30:00+00:00", True, "open"),  # 10:30 in Brussels
        ("2027-07-21T10:00:00+02:00", False, "holiday"),  # National Day
        ("2027-03-29T10:00:00+02:00", False, "holiday"),  # Easter Monday 2027
        ("2026-11-02T10:00:00+01:00", False, "closure"),
        ("2026-12-24T11:00:00+01:00", True, "open"),
        ("2026-12-24T13:30:00+01:00", False, "closure"),
    ],
)
def test_sample_opening_hours(sample: LoadedFlow, when: str, is_open: bool, reason: str) -> None:
    node = sample.node("opening_hours")
    assert isinstance(node, HoursNode)
    state = open_state(node, datetime.fromisoformat(when))
    assert (state.open, state.reason) == (is_open, reason)


def test_yaml_scalars_are_not_yaml_1_1_surprises() -> None:
    data, source = load_yaml(
        Path("x.yaml"), "t: 13:00\nn: no\nk:\n  1: a\n  '#': b\nd: 2026-12-24\nb: true\n"
    )
    assert data["t"] == "13:00" and data["n"] == "no"
    assert data["k"] == {"1": "a", "#": "b"}
    assert str(data["d"]) == "2026-12-24" and data["b"] is True
    assert source.line_of(("k", "#")) == 5
