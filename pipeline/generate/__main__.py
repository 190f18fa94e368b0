"""``python -m pipeline.generate compose|k8s ...``: the generators without the main CLI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.errors import StreamServeError
from pipeline.generate import register


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the ``compose`` or ``k8s`` command; 2 on a streamserve error."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.generate", description="deployment files for a graph")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except StreamServeError as exc:
        print(f"streamserve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
