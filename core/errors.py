"""The project's errors: bad input from the user, a bad results document, a bad catalog entry.

Part of ``core`` (imports nothing above it). Each is a ``UsageError``: the console script
prints its first line and exits with status 2.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user; the message says what to fix."""


class SchemaError(UsageError):
    """A results document that does not follow the record schema."""


class CatalogError(UsageError):
    """A name or a catalog file that cannot be used; the message says what to fix."""
