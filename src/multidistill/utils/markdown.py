"""Markdown shared by the model cards and the run report."""

from __future__ import annotations


def table_cell(text: object) -> str:
    r"""User-given text (a label, a task or domain name, a path) as one markdown table cell: a ``|`` would end the
    cell, so it is escaped as ``\|`` (which GFM reads as ``|``, inside code spans too), and a line break, which
    would end the row, becomes a space."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")
