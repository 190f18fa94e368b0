"""``streamserve models``: the built-in model servers, the extra each needs, and whether it is
installed here."""

from __future__ import annotations

import argparse
import json

from steps.registry import BUILTIN_MODELS


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand to the CLI's ``commands``."""
    text = "list the built-in model servers (add_model's short names), their extras and model files"
    sub = commands.add_parser("models", help=text, description=text)
    sub.add_argument("--format", choices=["text", "json"], default="text", help="output (default: text)")
    sub.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the registry as a table (or JSON lines)."""
    rows = [
        {
            "name": entry.name,
            "class": entry.path,
            "extra": entry.extra or "",
            "install": f'pip install "streamserve[{entry.extra}]"' if entry.extra else "(core install)",
            "installed": entry.installed,
            "formats": entry.formats,
        }
        for entry in BUILTIN_MODELS.values()
    ]
    if args.format == "json":
        for row in rows:
            print(json.dumps(row))
        return 0
    columns = ("name", "extra", "installed", "class")
    table = [[str(row[column]).replace("True", "yes").replace("False", "no") for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in table)) for i, column in enumerate(columns)]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths)).rstrip())
    for line, row in zip(table, rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        print(f"    {row['formats']}; {row['install']}")
    print('\nadd_model("key", "<name>", model_path=...) serves one; "streamserve[frameworks]" installs them all.')
    return 0
