"""`sidecar serve` with a disk that breaks on demand: a launcher for tests/test_faults.py.

``python tests/fault_serve.py HOME PORT_FILE FLAG``: while the file ``FLAG`` exists, every
store commit fails as a full disk does (SQLITE_FULL). Everything else is the real
``serve()``: Hypercorn, the error handlers, signals, the drain.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import trio

from sidecar.http.logs import configure_logging
from sidecar.http.serve import ServeOptions, serve


class FlagFileDisk:
    """A store fault hook: commits fail while ``flag`` exists (checked in the writer thread)."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __call__(self) -> None:
        if os.path.exists(self.flag):
            raise sqlite3.OperationalError("database or disk is full")


def main(home: str, port_file: str, flag: str) -> None:
    configure_logging("text", "INFO")
    options = ServeOptions(
        home=Path(home),
        port=0,
        port_file=Path(port_file),
        grace=1.0,
        entry_points=False,
        runtime_options={"store_fault_hook": FlagFileDisk(Path(flag))},
    )
    trio.run(serve, options)


if __name__ == "__main__":
    main(*sys.argv[1:])
