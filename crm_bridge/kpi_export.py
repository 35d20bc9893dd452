"""A KPI table (`crm_bridge.kpi.KpiTable`) as CSV (stdlib csv) or XLSX (openpyxl).

One header row, in the reader's language: the caller passes the labels (``column name ->
text``; the console's ``reports.column.*`` strings), because ``crm_bridge`` does not read the
console's catalogues. Values are numbers, never formatted text: percentages are fractions
(0.85), shown as ``85.0 %`` by the XLSX number format, written as ``0.85`` in CSV; seconds
are plain numbers; a rate without calls is an empty cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from crm_bridge.kpi import COLUMNS, Column, KpiTable

PERCENT_FORMAT = "0.0%"
SECONDS_FORMAT = "0.0"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"


def _cell(column: Column, value: Any, none_label: str) -> Any:
    if column.name == "key" and value is None:
        return none_label
    if isinstance(value, float):
        return round(value, 4 if column.kind == "percent" else 2)
    return value


def rows(table: KpiTable, none_label: str = "") -> list[list[Any]]:
    """The table's values, one list per row, in `COLUMNS` order."""
    return [[_cell(c, c.value(r), none_label) for c in COLUMNS] for r in table.rows]


def headers(labels: Mapping[str, str]) -> list[str]:
    return [labels.get(c.name, c.name) for c in COLUMNS]


def to_csv(
    table: KpiTable, labels: Mapping[str, str], *, none_label: str = "", delimiter: str = ","
) -> str:
    """CSV text: the header row, then one line per period and dimension value."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(headers(labels))
    writer.writerows(rows(table, none_label))
    return out.getvalue()


def to_xlsx(
    table: KpiTable, labels: Mapping[str, str], *, none_label: str = "", title: str = "KPI"
) -> bytes:
    """An XLSX workbook of one sheet: bold, frozen header row; percentages as numbers
    formatted ``0.0%``."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = title[:31]  # Excel's limit
    sheet.append(headers(labels))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    for values in rows(table, none_label):
        sheet.append(values)
    for index, column in enumerate(COLUMNS, start=1):
        fmt = {"percent": PERCENT_FORMAT, "seconds": SECONDS_FORMAT}.get(column.kind)
        letter = get_column_letter(index)
        sheet.column_dimensions[letter].width = max(10, len(labels.get(column.name, "")) + 2)
        if fmt is None:
            continue
        for row in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
            row[0].number_format = fmt
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
