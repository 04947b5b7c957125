"""``avatar keys rotate``: a new master key, and every data key re-wrapped under it (docs/security.md).

Only the wrapped data keys in the headers change; the audio and text themselves are not
re-encrypted. Values written before encryption existed are sealed on the way. The run is
idempotent, so an interrupted rotation is finished by running it again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from avatar.infrastructure.crypto import Envelope
from avatar.settings import Settings


@dataclass
class RotationReport:
    master_key_id: str
    new_key: bool
    columns: dict[str, int] = field(default_factory=dict)
    objects_rewrapped: int = 0
    objects_sealed: int = 0
    objects_unchanged: int = 0
    failed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = "new master key" if self.new_key else "active master key"
        out = [f"{head} {self.master_key_id}"]
        out += [f"{column}: {count} value(s) re-wrapped or sealed" for column, count in self.columns.items()]
        out.append(
            f"objects: {self.objects_rewrapped} re-wrapped, {self.objects_sealed} sealed, "
            f"{self.objects_unchanged} already under the active key"
        )
        out += [f"FAILED {line}" for line in self.failed]
        return out


async def rotate_master_key(settings: Settings, *, new_key: bool) -> RotationReport:
    """Rotate (or, without ``new_key``, only re-wrap under the active key) and report what changed."""
    from avatar.infrastructure.database import build_unit_of_work_factory
    from avatar.infrastructure.database.encrypted import rewrap_columns
    from avatar.infrastructure.object_store import build_object_store
    from avatar.infrastructure.secrets import load_keyring, resolve_signing_keys

    resolve_signing_keys(settings)
    keyring = load_keyring(settings)
    if new_key:
        keyring.rotate_file()
    envelope = Envelope(keyring)
    report = RotationReport(master_key_id=keyring.active_id, new_key=new_key)
    async with contextlib.AsyncExitStack() as stack:
        uow = await build_unit_of_work_factory(settings, stack, keyring)
        report.columns = await rewrap_columns(uow.engine, envelope)
        store = await build_object_store(settings, stack, keyring)
        objects = await store.rewrap_all()
    report.objects_rewrapped = objects.rewrapped
    report.objects_sealed = objects.sealed
    report.objects_unchanged = objects.unchanged
    report.failed = objects.failed
    return report
