"""Ingest's errors: what the CLI shows as one red line."""

from __future__ import annotations


class IngestError(ValueError):
    """Ingest cannot proceed; the message names the file or field and what was expected."""


class InputFileError(IngestError):
    """An input path is missing, unreadable, corrupt or of an unsupported type."""
