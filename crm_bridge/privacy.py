"""Keep Belgian national register numbers (NN/BIS) out of logs and error messages (GDPR).

Masking rule for free text: a national number is 11 digits, so we mask

* any run of exactly 11 digits that is not part of a longer digit run and not preceded
  by ``+`` (``+32470123456`` is an E.164 phone number, not a register number), and
* the printed forms ``YY.MM.DD-XXX.CC`` / ``YY MM DD XXX CC`` (separators ``.``, ``-`` or
  a space, each optional).

Phone numbers (9 or 10 national digits, ``0032...`` with 13) therefore stay readable, which
agents need. We deliberately do not check the NN checksum before masking: a mistyped
number is still, almost always, someone's number.
"""

from __future__ import annotations

import logging
import re

_KEEP = 2
_FORMATTER = logging.Formatter()
_SEP = r"[.\- ]?"
_NN_IN_TEXT = re.compile(
    rf"(?<![\d+])\d{{2}}{_SEP}\d{{2}}{_SEP}\d{{2}}{_SEP}\d{{3}}{_SEP}\d{{2}}(?!\d)"
)


def mask_national_number(number: str) -> str:
    """Return ``*********28``: only the last two digits stay, punctuation is dropped.

    Works on partial entries (``850730`` gives ``****30``); with fewer than three digits
    everything is masked, since there is nothing meaningful to keep.
    """
    digits = "".join(ch for ch in number if ch.isdigit())
    if len(digits) <= _KEEP:
        return "*" * len(digits)
    return "*" * (len(digits) - _KEEP) + digits[-_KEEP:]


def mask_digits_in_text(text: str) -> str:
    """Mask every national number found in ``text`` (see the module docstring for the rule)."""
    return _NN_IN_TEXT.sub(lambda m: mask_national_number(m.group()), text)


class NationalNumberFilter(logging.Filter):
    """Logging filter that masks national numbers in the message, its args and tracebacks.

    Attach it to *handlers* (logger filters do not see records propagated from child
    loggers). The message is rendered once and the args dropped, so a number hidden in a
    non-string argument (an int, an object's ``__str__``) is masked as well. Idempotent.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: mask the raw parts
            message = f"{record.msg} {record.args!r}"
        record.msg = mask_digits_in_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_digits_in_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_digits_in_text(record.stack_info)
        return True


def install_log_masking(logger: logging.Logger | None = None) -> NationalNumberFilter:
    """Add one `NationalNumberFilter` to every handler of ``logger`` (default: root)."""
    target = logger if logger is not None else logging.getLogger()
    log_filter = NationalNumberFilter()
    for handler in target.handlers:
        if not any(isinstance(f, NationalNumberFilter) for f in handler.filters):
            handler.addFilter(log_filter)
    return log_filter
