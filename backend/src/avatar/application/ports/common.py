"""Types shared by every port."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    """One dependency's status as reported by ``/api/v1/health`` and ``avatar doctor``."""

    name: str
    ok: bool
    detail: str = ""
    extra: dict[str, object] = field(default_factory=dict)


class HealthCheck(Protocol):
    """Anything that can say whether it works."""

    async def health(self) -> ComponentHealth:
        """Check the component without side effects; never raises."""
        ...
