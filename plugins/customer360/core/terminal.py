"""Text from the sources (file names, reasons quoting a line, error messages) on the terminal.

rich reads square brackets in a string as markup: a file named ``store_[bold]1.csv`` or a
reason quoting ``[link=...]`` would restyle the output, and ``[/x]`` without its opening tag
makes rich raise. Whatever did not come from our own code is shown through :func:`plain`.
It is redacted on the way as log lines are (:func:`customer360.core.masking.redact`): an error
message may quote a URL with its credentials, a token, or a source line with an email.
"""

from __future__ import annotations

from rich.text import Text

from customer360.core.masking import redact


def plain(value: object) -> Text:
    """``value`` as literal text (no markup, no emoji codes), redacted."""
    return Text(redact(str(value)))


def labelled(label: str, style: str, message: object) -> Text:
    """``label`` in ``style``, then ``message`` literally and redacted: "refused: <why>"."""
    return Text.assemble((label, style), " ", redact(str(message)))
