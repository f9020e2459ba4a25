"""Telling a store that refuses the data from a store that is not there.

A failed insert means one of two things, and they need opposite answers. Either the
store *rejected the data* (a value it cannot parse or hold, a block spanning too many
partitions): sending the same rows again fails the same way forever, so the rows at
fault must be found and set aside. Or the store is *unreachable or unwell* (down, out of
memory, too many parts to merge, an unmigrated table): nothing is wrong with the rows,
so the write waits and retries. :class:`StoreDataError` is the first; a plain
:class:`~trainguard.errors.StoreError` is the second. Both backends classify the
engine's message with :func:`is_data_error`, by ClickHouse's error code.
"""

from __future__ import annotations

import re

from trainguard.errors import StoreError

__all__ = ["DATA_ERROR_CODES", "StoreDataError", "error_code", "is_data_error"]

#: ClickHouse error codes that blame the inserted data, never the store's state.
DATA_ERROR_CODES: frozenset[int] = frozenset({
    6,    # CANNOT_PARSE_TEXT
    25,   # CANNOT_PARSE_ESCAPE_SEQUENCE
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,   # ATTEMPT_TO_READ_AFTER_EOF (a truncated row)
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    190,  # SIZES_OF_ARRAYS_DONT_MATCH
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    407,  # DECIMAL_OVERFLOW
    459,  # CANNOT_PARSE_BOOL
    1001, # STD_EXCEPTION raised while parsing a value (see _STD_DATA)
})

#: Code 252 (TOO_MANY_PARTS) is both "merges cannot keep up" (wait) and "this block
#: spans more partitions than one insert may" (the data's timestamps): only the second
#: is the data's fault.
_TOO_MANY_PARTITIONS = "Too many partitions for single INSERT block"
_CODE = re.compile(r"Code:\s*(\d+)")
# std::exception from a value conversion (e.g. out_of_range while parsing a number);
# any other std::exception (bad_alloc, a filesystem error) is the store's state.
_STD_DATA = re.compile(r"out_of_range|invalid_argument|stoi|stod|stoll", re.IGNORECASE)


class StoreDataError(StoreError):
    """The store refused the data of an insert; retrying the same rows cannot succeed."""


def error_code(message: str) -> int | None:
    """Return the ClickHouse error code named in ``message`` (``Code: 27.``), if any."""
    match = _CODE.search(message)
    return int(match.group(1)) if match else None


def is_data_error(message: str) -> bool:
    """Tell whether an engine error ``message`` blames the inserted data.

    Unknown codes and messages without a code count as the store's state: a wrong guess
    that way only delays (the write is retried), the other way it would discard rows.
    """
    if _TOO_MANY_PARTITIONS in message:
        return True
    code = error_code(message)
    if code is None or code not in DATA_ERROR_CODES:
        return False
    return code != 1001 or bool(_STD_DATA.search(message))
