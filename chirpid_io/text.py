"""Text that is safe to print: file names and reasons from data, with control characters escaped.

A file name may hold any byte but "/" and NUL: a newline, a carriage return, an ANSI
escape sequence, a bidirectional override. Printed raw, ``evil\\nrecordings: 999 added``
forges a line of a report and ``\\x1b[2J`` clears the user's terminal. Every path or
data-derived string that reaches a message, a report line or a log goes through
:func:`shown`, which keeps printable text (any script) as it is and writes the rest as
Python-style escapes, so the output stays one honest line per item.
"""

from __future__ import annotations

import os
import unicodedata

#: Format characters that reorder or hide text (bidirectional overrides and isolates, zero
#: width joiners are harmless and kept); escaped like control characters.
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def shown(value: object) -> str:
    """``value`` (a path or any text) as one printable line: control characters, line and
    paragraph separators and bidirectional controls become escapes (``\\n``, ``\\x1b``,
    ``\\u202e``); a surrogate-escaped undecodable byte becomes ``\\xNN``."""
    text = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
    if text.isprintable() and not _BIDI.intersection(text):
        return text
    return "".join(_escape(c) for c in text)


def _escape(char: str) -> str:
    if char.isprintable() and char not in _BIDI:
        return char
    code = ord(char)
    if char in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    if char == " ":
        return char
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape for a non-UTF-8 byte
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(char) == "Zs":  # other spaces are printable enough
        return char
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
