"""Normalise phone numbers so a caller ID matches the number stored in the directory.

Belgian forms (``0470/12.34.56``, ``+32 (0)470 12 34 56``, ``0032470123456``) become
E.164 ``+32470123456``. Other international forms become ``+`` and digits. Anything we
cannot place (short numbers, extensions) is kept as bare digits, so it still matches
itself but never pretends to be E.164.
"""

from __future__ import annotations

BELGIUM = "32"
# Belgian national significant numbers have 8 (landline) or 9 (mobile) digits.
_BE_NSN_LENGTHS = (8, 9)


def normalise_phone(raw: str | None) -> str | None:
    """Return the lookup form of ``raw``, or None when it holds no digits (``anonymous``)."""
    if raw is None:
        return None
    text = raw.strip().replace("(0)", "")
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits:
        return None
    if text.startswith("+"):
        international = digits
    elif digits.startswith("00"):
        international = digits[2:]
    elif digits.startswith("0"):
        international = BELGIUM + digits[1:]
    elif digits.startswith(BELGIUM) and len(digits) - len(BELGIUM) in _BE_NSN_LENGTHS:
        # Asterisk often presents "32470123456": the country code without "+".
        international = digits
    else:
        return digits
    if international.startswith(BELGIUM + "0"):  # "+32 0470..." written with the trunk 0
        international = BELGIUM + international[len(BELGIUM) + 1 :]
    return "+" + international if international else None
