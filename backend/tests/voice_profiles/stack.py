"""A container of the real parts the voice-profile capability uses: PostgreSQL + pgvector, an S3
server, the GE2E speaker encoder and the embedded TTS (Piper fast tier; HQ off to keep tests light).
The rest (ASR, LLM, ...) are fakes: they are not what these tests are about."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from avatar.bootstrap import Container
from avatar.infrastructure.database import SqlUnitOfWorkFactory, create_engine, migrate
from avatar.infrastructure.object_store import build_object_store
from avatar.infrastructure.speaker import build_speaker_encoder
from avatar.infrastructure.tts import build_synthesizers
from avatar.settings import ObjectStoreSettings, Settings, TTSSettings
from tests.fakes import fake_container
from tests.support.servers import S3Server


@dataclass
class RealParts:
    settings: Settings
    container: Container
    factory: SqlUnitOfWorkFactory
    bucket_dir: Path


@contextlib.asynccontextmanager
async def real_parts(database_url: str, s3: S3Server, data_dir: Path) -> AsyncIterator[RealParts]:
    bucket = f"vp-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        tts=TTSSettings(hq_enabled=False),
        object_store=ObjectStoreSettings(
            kind="s3", endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, bucket=bucket
        ),
    )
    async with contextlib.AsyncExitStack() as exits:
        engine = create_engine(database_url, pool_size=2)
        exits.push_async_callback(engine.dispose)
        await migrate.upgrade(engine)
        factory = SqlUnitOfWorkFactory(engine)
        fast, hq = await build_synthesizers(settings, exits)
        container = fake_container(
            settings,
            uow=factory,
            object_store=await build_object_store(settings, exits),
            speaker_encoder=await build_speaker_encoder(settings, exits),
            fast_tts=fast,
            hq_tts=hq,
        )
        yield RealParts(settings, container, factory, s3.root / bucket)
