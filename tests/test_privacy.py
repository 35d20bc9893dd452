"""GDPR: a national number never reaches the logs in full; phone numbers stay readable."""

from __future__ import annotations

import logging
import sys

import pytest
from crm_fixtures import BIS_1998, NN_1985, NN_2017

from crm_bridge.models import Citizen
from crm_bridge.privacy import (
    NationalNumberFilter,
    install_log_masking,
    mask_digits_in_text,
    mask_national_number,
)


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("85073003328", "*********28"),
        ("85.07.30-033.28", "*********28"),
        ("850730", "****30"),  # partial entry, e.g. a caller who hung up halfway
        ("123", "*23"),
        ("12", "**"),
        ("", ""),
    ],
)
def test_mask_national_number(raw: str, masked: str) -> None:
    assert mask_national_number(raw) == masked


@pytest.mark.parametrize(
    "text",
    [
        f"lookup {NN_1985} failed",
        "lookup 85.07.30-033.28 failed",
        "lookup 85 07 30 033 28 failed",
        "lookup 850730-033-28 failed",
        "lookup 85.07.30 03328 failed",
        f"nn={NN_1985}",
        f"BE{NN_1985}",
    ],
)
def test_national_numbers_are_masked_in_text(text: str) -> None:
    masked = mask_digits_in_text(text)
    assert "*********28" in masked
    assert "0730" not in masked.replace(".", "").replace(" ", "").replace("-", "")


def test_several_numbers_in_one_text() -> None:
    masked = mask_digits_in_text(f"{NN_1985}, {NN_2017} and {BIS_1998}")
    assert masked == "*********28, *********84 and *********65"


@pytest.mark.parametrize(
    "text",
    [
        "caller 0470123456",  # Belgian mobile, 10 digits
        "caller 021234567",  # Brussels landline, 9 digits
        "caller +32470123456",  # E.164: 11 digits after the +
        "caller 0032470123456",  # 13 digits
        "caller 0470 12 34 56",
        "caller +32 470 12 34 56",
        "call 1700000000.123 at 2026-11-02 09:15:00",  # Asterisk uniqueid and a timestamp
        "IBAN BE68539007547034",  # 14 digits: not a national number
        "850730033281",  # 12 digits: not a national number either
    ],
)
def test_other_digit_runs_stay_readable(text: str) -> None:
    assert mask_digits_in_text(text) == text


def _record(msg: object, *args: object) -> logging.LogRecord:
    return logging.LogRecord("guichet", logging.INFO, __file__, 1, msg, args or None, None)


def test_filter_masks_message_and_args() -> None:
    record = _record("citizen %s on %s (%d)", NN_1985, "0470123456", int(NN_2017))
    assert NationalNumberFilter().filter(record)
    assert record.getMessage() == "citizen *********28 on 0470123456 (*********84)"


def test_filter_masks_mapping_args_and_is_idempotent() -> None:
    record = logging.LogRecord(
        "guichet", logging.INFO, __file__, 1, "nn=%(nn)s", ({"nn": NN_1985},), None
    )
    log_filter = NationalNumberFilter()
    log_filter.filter(record)
    log_filter.filter(record)  # a second handler sees the same record
    assert record.getMessage() == "nn=*********28"


def test_filter_masks_tracebacks() -> None:
    try:
        raise ValueError(f"unknown citizen {NN_1985}")
    except ValueError:
        record = logging.LogRecord(
            "guichet", logging.ERROR, __file__, 1, "lookup failed", None, sys.exc_info()
        )
    NationalNumberFilter().filter(record)
    assert record.exc_text is not None
    assert NN_1985 not in logging.Formatter().format(record)
    assert "*********28" in record.exc_text


def test_full_number_never_reaches_a_handler(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("guichet.test.privacy")
    caplog.handler.addFilter(NationalNumberFilter())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("identified %s", NN_1985)
        logger.warning(f"f-string leak {NN_2017}")
    assert NN_1985 not in caplog.text
    assert NN_2017 not in caplog.text
    assert "identified *********28" in caplog.text


def test_install_log_masking_adds_one_filter_per_handler() -> None:
    logger = logging.getLogger("guichet.test.install")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        install_log_masking(logger)
        install_log_masking(logger)
        assert sum(isinstance(f, NationalNumberFilter) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)


def test_citizen_repr_hides_the_national_number() -> None:
    citizen = Citizen(national_number=NN_1985, first_name="Jan", last_name="Peeters")
    assert NN_1985 not in repr(citizen)
    assert NN_1985 not in str(citizen)
