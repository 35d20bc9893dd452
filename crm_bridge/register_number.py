"""Belgian register numbers: national number (NN) or BIS number, checked with python-stdnum.

A BIS number is an NN whose month is raised by 20 or 40, so the month tells which
stdnum module must validate it (and yields the more useful error message).
"""

from __future__ import annotations

from stdnum.be import bis, nn
from stdnum.exceptions import ValidationError

from crm_bridge.privacy import mask_national_number


class InvalidRegisterNumber(ValueError):
    """The number is not a valid NN nor BIS; the message never holds the full number."""


def compact(number: str) -> str:
    """Strip the usual separators (``85.07.30-033.28`` gives ``85073003328``)."""
    return str(nn.compact(number))


def is_bis(number: str) -> bool:
    """True when the (compact) number has a BIS month (20..32 or 40..52)."""
    return len(number) >= 4 and number[2:4].isdigit() and int(number[2:4]) >= 20


def validate(number: str) -> str:
    """Return the compact 11-digit number, or raise `InvalidRegisterNumber`."""
    compacted = compact(number)
    if not compacted:
        raise InvalidRegisterNumber("national number is missing")
    module = bis if is_bis(compacted) else nn
    try:
        return str(module.validate(compacted))
    except ValidationError as exc:
        kind = "BIS number" if module is bis else "national number"
        shown = mask_national_number(compacted) or "(no digits)"
        reason = str(exc).rstrip(".")
        raise InvalidRegisterNumber(f"{kind} {shown}: {reason}") from None
