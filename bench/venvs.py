"""Peers in their own virtualenvs under bench/.venvs, installed once with pip and reused."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from common import BENCH

VENVS = BENCH / ".venvs"


def venv(name: str, packages: list[str], timeout_s: float) -> tuple[Path | None, str]:
    """``bench/.venvs/<name>`` with ``packages``: (its bin folder, "") or (None, why not)."""
    home, spec = VENVS / name, " ".join(packages)
    marker, log = home / "installed.txt", VENVS / f"{name}.pip.log"
    if marker.is_file() and marker.read_text() == spec:
        return home / "bin", ""
    VENVS.mkdir(parents=True, exist_ok=True)
    print(f"installing {spec} into {home.relative_to(BENCH.parent)} (up to {timeout_s:.0f} s) ...", flush=True)
    started = time.monotonic()
    try:
        if not (home / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, capture_output=True, timeout=120)
        with open(log, "wb") as out:
            left = max(1.0, timeout_s - (time.monotonic() - started))
            done = subprocess.run(
                [str(home / "bin" / "pip"), "install", *packages], stdout=out, stderr=subprocess.STDOUT, timeout=left
            )
    except subprocess.TimeoutExpired:
        return None, f"pip install {spec} did not finish within {timeout_s:.0f} s (log: {log})"
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot create the venv {home}: {exc}"
    if done.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        return None, f"pip install {spec} failed (exit {done.returncode}): {tail} (log: {log})"
    marker.write_text(spec)
    return home / "bin", ""
