"""YAML text for generated files: keys in the order built, commands on one line, multi-line
text as literal blocks, and a comment header."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

__all__ = ["Flow", "dump"]


class Flow(list):
    """A list written on one line (``["run", "g.py:graph", "--step", "lr"]``)."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that never emits anchors (every generated mapping stands on its own) and indents
    block lists under their key."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # list items indented under their key


def _flow(dumper: yaml.SafeDumper, data: Flow) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(Flow, _flow)
_Dumper.add_representer(str, _text)


def dump(documents: Iterable[dict[str, Any]], header: Iterable[str] = ()) -> str:
    """``documents`` as one YAML text (``---`` between several), after ``header`` as ``#`` comments."""
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header)
    bodies = [
        yaml.dump(
            document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1_000_000, allow_unicode=True
        )
        for document in documents
    ]
    return comments + "---\n".join(bodies)
