"""Named digit validators an `input` node can use.

Belgian national register and BIS numbers are checked with python-stdnum (`stdnum.be.nn`,
`stdnum.be.bis`): checksum, birth date and the post-2000 `2` prefix rule are theirs, not ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stdnum.be import bis, nn
from stdnum.exceptions import ValidationError


@dataclass(frozen=True, slots=True)
class Validator:
    name: str
    check: Callable[[str], bool]
    sensitive: bool  # digits are personal data: masked in journeys, never exported to Asterisk


def _stdnum(module: object) -> Callable[[str], bool]:
    def check(digits: str) -> bool:
        try:
            module.validate(digits)  # type: ignore[attr-defined]
        except ValidationError:
            return False
        return True

    return check


def _national_or_bis(digits: str) -> bool:
    return _stdnum(nn)(digits) or _stdnum(bis)(digits)


VALIDATORS: dict[str, Validator] = {
    v.name: v
    for v in (
        Validator("national_number", _national_or_bis, sensitive=True),
        Validator("nn", _stdnum(nn), sensitive=True),
        Validator("bis", _stdnum(bis), sensitive=True),
        Validator("digits", str.isdigit, sensitive=False),
    )
}
