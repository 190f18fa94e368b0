"""Print streamserve's runtime dependencies and everything they pull in, pinned to the versions
installed here, one ``name==version`` a line: what the local Python image installs."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def closure(requirements: list[str]) -> dict[str, str]:
    """``{distribution: installed version}`` for ``requirements`` and their dependencies."""
    pinned: dict[str, str] = {}
    queue = [Requirement(text) for text in requirements]
    while queue:
        requirement = queue.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = requirement.name.lower().replace("_", "-")
        if name in pinned:
            continue
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"pins.py: {requirement.name} is not installed here: run `pip install -e .` first")
        pinned[name] = distribution.version
        queue.extend(Requirement(text) for text in distribution.requires or [])
    return pinned


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name, version in sorted(closure(project["dependencies"]).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
