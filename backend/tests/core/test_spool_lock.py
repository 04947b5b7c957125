"""One owner per spool directory (docs/resilience.md, "The journal on disk"): a second process, or
a second spool in the same process, cannot open a directory another one holds, so two processes
never replay the same journal; the lock goes with its owner's close or death."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from avatar.application.ports.spool import SpoolLockedError
from avatar.domain.errors import DependencyError
from avatar.infrastructure.crypto import Envelope, Keyring, generate_key
from avatar.infrastructure.spool import FileSpool

HOLDER = """
import sys
from pathlib import Path
from avatar.infrastructure.crypto import Envelope, Keyring, generate_key
from avatar.infrastructure.spool import FileSpool
envelope = Envelope(Keyring.from_keys([generate_key()]))
spool = FileSpool(Path(sys.argv[1]), envelope, max_records=10, max_bytes=10**6)
print("owned", flush=True)
sys.stdin.read()  # hold the spool until the test closes our stdin
"""


def open_spool(root: Path) -> FileSpool:
    return FileSpool(root, Envelope(Keyring.from_keys([generate_key()])), max_records=10, max_bytes=10**6)


def test_a_spool_another_process_holds_cannot_be_opened_until_it_ends(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "owned"
        with pytest.raises(SpoolLockedError) as refused:
            open_spool(root)
        assert isinstance(refused.value, DependencyError)
        assert str(root) in refused.value.message and "data_dir" in refused.value.message
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
    # the holder ended: the kernel dropped its lock, so a new owner (a restarted process) opens it
    spool = open_spool(root)
    spool.close()


def test_a_second_spool_in_the_same_process_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = open_spool(tmp_path / "spool")
    with pytest.raises(SpoolLockedError):
        open_spool(tmp_path / "spool")
    open_spool(tmp_path / "other").close()  # another directory is another journal
    first.close()
    first.close()  # closing twice is harmless
    second = open_spool(tmp_path / "spool")
    second.close()
