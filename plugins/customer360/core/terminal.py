"""Text from the sources (file names, reasons quoting a line, error messages) on the terminal.

rich reads square brackets in a string as markup: a file named ``store_[bold]1.csv`` or a
reason quoting ``[link=...]`` would restyle the output, and ``[/x]`` without its opening tag
makes rich raise. Whatever did not come from our own code is shown through :func:`plain`.
"""

from __future__ import annotations

from rich.text import Text


def plain(value: object) -> Text:
    """``value`` as literal text (no markup, no emoji codes)."""
    return Text(str(value))


def labelled(label: str, style: str, message: object) -> Text:
    """``label`` in ``style``, then ``message`` literally: "refused: <why>"."""
    return Text.assemble((label, style), " ", str(message))
