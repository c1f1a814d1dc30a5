"""Errors of getting data in, shared by the extractors and their entry point."""


class ExtractError(RuntimeError):
    """An extract failed in a way a retry will not fix (bad token, unreadable reference data)."""
