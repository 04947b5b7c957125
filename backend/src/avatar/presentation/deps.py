"""FastAPI dependency aliases (``ContainerDep``, ``ServicesDep``, ``SettingsDep``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from avatar.bootstrap import Container, Services
from avatar.settings import Settings


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ContainerDep = Annotated[Container, Depends(get_container)]
ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
