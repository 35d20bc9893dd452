"""CSV import of the citizen directory: stdnum validation, upsert, FILE:LINE errors, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from crm_fixtures import *  # noqa: F403  (the pytest fixtures)
from crm_fixtures import (
    BIS_1998,
    BIS_UNKNOWN_SEX,
    NN_1985,
    NN_1990,
    NN_2017,
    bad_checksum,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from typer.testing import CliRunner

from crm_bridge.citizens_import import import_citizens, parse_citizens_csv
from crm_bridge.cli import citizens_app
from crm_bridge.db import session_factory
from crm_bridge.models import Citizen

HEADER = (
    "national_number,first_name,last_name,preferred_language,street,postal_code,city,phone,email"
)


def _write(path: Path, lines: list[str], *, bom: bool = False, delimiter: str = ",") -> Path:
    text = "\n".join(line.replace(",", delimiter) for line in lines) + "\n"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path


async def _citizens(engine: AsyncEngine) -> dict[str, Citizen]:
    async with session_factory(engine)() as session:
        rows = (await session.exec(select(Citizen).order_by(col(Citizen.id)))).all()
    return {c.national_number: c for c in rows}


@pytest.mark.parametrize(("delimiter", "bom"), [(",", False), (";", True), (";", False)])
async def test_import_good_file(
    crm_engine: AsyncEngine,
    tmp_path: Path,
    delimiter: str,
    bom: bool,
) -> None:
    path = _write(
        tmp_path / "citizens.csv",
        [
            HEADER,
            f"{NN_1985},Jan,Peeters,NL,Veldstraat 1,9000,Gent,0470/12.34.56,jan@example.be",
            f"{NN_2017},Émilie,Dubois,fr,Rue de la Loi 16,1000,Bruxelles,,",
            "98.47.28-997.65,Hans,Müller,de,,,,+49 30 1234567,",  # formatted BIS
        ],
        bom=bom,
        delimiter=delimiter,
    )
    report = await import_citizens(crm_engine, path)
    assert report.errors == []
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (3, 0, 0, 0)
    citizens = await _citizens(crm_engine)
    assert set(citizens) == {NN_1985, NN_2017, BIS_1998}
    jan = citizens[NN_1985]
    assert (jan.first_name, jan.preferred_language, jan.phone) == ("Jan", "nl", "+32470123456")
    assert jan.email == "jan@example.be"
    emilie = citizens[NN_2017]
    assert (emilie.first_name, emilie.city, emilie.phone, emilie.email) == (
        "Émilie",
        "Bruxelles",
        None,
        None,
    )
    assert citizens[BIS_1998].phone == "+49301234567"


async def test_reimport_updates_by_national_number(
    crm_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    first = _write(
        tmp_path / "v1.csv",
        [HEADER, f"{NN_1985},Jan,Peeters,nl,,,,,", f"{NN_1990},An,Janssens,nl,,,,,"],
    )
    await import_citizens(crm_engine, first)
    before = await _citizens(crm_engine)
    second = _write(
        tmp_path / "v2.csv",
        [
            HEADER,
            f"{NN_1985},Jan,Peeters,fr,Nieuwe Straat 2,2000,Antwerpen,,",
            f"{NN_1990},An,Janssens,nl,,,,,",
            f"{NN_2017},Lotte,Peeters,nl,,,,,",
        ],
    )
    report = await import_citizens(crm_engine, second)
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (1, 1, 1, 0)
    after = await _citizens(crm_engine)
    assert len(after) == 3
    jan = after[NN_1985]
    assert jan.id == before[NN_1985].id
    assert (jan.preferred_language, jan.city) == ("fr", "Antwerpen")
    assert jan.updated_at > before[NN_1985].updated_at
    assert after[NN_1990].updated_at == before[NN_1990].updated_at


async def test_bad_rows_are_reported_and_skipped(
    crm_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    wrong = bad_checksum(NN_1985)
    path = _write(
        tmp_path / "mixed.csv",
        [
            HEADER,
            f"{NN_1985},Jan,Peeters,nl,,,,,",  # line 2: ok
            f"{wrong},Bad,Checksum,nl,,,,,",  # line 3
            "8507300332,Too,Short,nl,,,,,",  # line 4
            f"{NN_1990},,Nameless,nl,,,,,",  # line 5
            f"{NN_2017},Lotte,Peeters,xx,,,,,",  # line 6
            "",  # line 7: blank
            f"{BIS_UNKNOWN_SEX},Ana,Silva,,,,,,",  # line 8: ok (BIS, sex unknown)
            f"{NN_1985},Jan,Again,nl,,,,,",  # line 9: duplicate of line 2
            f"{NN_2017},Lotte,Peeters,nl,,,,not-a-phone,",  # line 10
            f"{NN_2017},Lotte,Peeters,nl,,,,,lotte.example.be",  # line 11
            f"{NN_2017},Lotte,Peeters,nl,,,,,,extra",  # line 12
            ",,,,,,,,",  # line 13: empty row, ignored
            f"{NN_2017},Lotte,Peeters,nl,,,,,",  # line 14: ok
        ],
    )
    report = await import_citizens(crm_engine, path)
    assert (report.inserted, report.updated, report.rejected) == (3, 0, 8)
    assert report.errors == [
        f"{path}:3: national number *********{wrong[-2:]}: "
        "The number's checksum or check digit is invalid",
        f"{path}:4: national number ********32: The number has an invalid length",
        f"{path}:5: first_name and last_name are required",
        f"{path}:6: preferred_language 'xx' is not one of fr, nl, en, de",
        f"{path}:9: duplicate national number (first on line 2)",
        f"{path}:10: phone is not a phone number",
        f"{path}:11: email is not an e-mail address",
        f"{path}:12: too many fields",
    ]
    assert not any(NN_1985 in e or wrong in e for e in report.errors)
    assert set(await _citizens(crm_engine)) == {NN_1985, BIS_UNKNOWN_SEX, NN_2017}


def test_bad_header_rejects_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.csv", ["nn,first_name,surname", f"{NN_1985},Jan,Peeters"])
    rows, errors = parse_citizens_csv(path)
    assert rows == []
    assert errors == [
        (
            1,
            "bad header: missing column(s) national_number, last_name; "
            "unknown column(s) nn, surname",
        )
    ]


def test_not_utf8_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{HEADER}\n{NN_1985},Ren\xe9,Peeters,fr,,,,,\n".encode("latin-1"))
    assert parse_citizens_csv(path) == ([], [(2, "not UTF-8 text")])


def test_quoted_fields_and_header_spacing(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text(
        " National_Number ; first_name ; last_name ; city\n"
        f'"{NN_1985}";"Jan";"Peeters";"Sint-Niklaas; Waas"\n',
        encoding="utf-8",
    )
    rows, errors = parse_citizens_csv(path)
    assert errors == []
    assert [(r.national_number, r.city, r.phone) for r in rows] == [
        (NN_1985, "Sint-Niklaas; Waas", None)
    ]


def test_cli_import_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    database_url = f"sqlite:///{tmp_path / 'db' / 'guichet.db'}"
    good = _write(tmp_path / "good.csv", [HEADER, f"{NN_1985},Jan,Peeters,nl,,,,,"])
    result = runner.invoke(citizens_app, ["import", str(good), "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "inserted" in result.output

    wrong = bad_checksum(NN_2017)
    bad = _write(tmp_path / "bad.csv", [HEADER, f"{wrong},Lotte,Peeters,nl,,,,,"])
    result = runner.invoke(citizens_app, ["import", str(bad), "--database-url", database_url])
    assert result.exit_code == 1
    assert "bad.csv:2:" in result.output
    assert wrong not in result.output
