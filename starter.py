"""`python starter.py <process> <args...>`: start one run and print its id and
Web UI link (the same as `baton start`)."""

from __future__ import annotations

import sys

from baton.cli import run

if __name__ == "__main__":
    run(["start", *sys.argv[1:]])
