"""docs/configuration.md is generated from the settings model and never goes stale; every setting is
described, every documented variable really sets its setting, and shared defaults agree."""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field

from avatar import settings_docs
from avatar.application.conversation import ConversationConfig
from avatar.cli import main
from avatar.settings import REPO_ROOT, Settings, _shared
from avatar_tts.config import ServiceConfig as TTSServiceConfig


@pytest.fixture(autouse=True)
def _no_avatar_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("AVATAR_"):
            monkeypatch.delenv(key)


def test_every_setting_and_group_has_a_description() -> None:
    assert settings_docs.undocumented() == []


def test_the_committed_page_is_current() -> None:
    # On failure: run `avatar config docs` and commit docs/configuration.md.
    assert settings_docs.check() is None


def test_the_page_lists_every_setting_once() -> None:
    page = settings_docs.DOCS_PATH.read_text(encoding="utf-8")
    documented = re.findall(r"^\| `(AVATAR_[A-Z0-9_]+)` \|", page, flags=re.MULTILINE)
    expected = [settings_docs.env_name(*path) for path, _ in settings_docs.leaf_settings()]
    assert sorted(documented) == sorted(expected)
    assert len(set(documented)) == len(documented)


def test_the_page_has_no_machine_specific_paths() -> None:
    assert str(REPO_ROOT) not in settings_docs.render()
    assert "`<repo>/var/pgdata`" in settings_docs.render()


def test_each_documented_variable_sets_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every integer, number and boolean setting, set through its documented name, changes."""
    changed = 0
    for path, info in settings_docs.leaf_settings():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, bool):
            new: object = not default
        elif isinstance(default, int | float) and not isinstance(default, enum.Enum):
            new = default + 1
        else:
            continue
        name = settings_docs.env_name(*path)
        monkeypatch.setenv(name, str(new).lower() if isinstance(new, bool) else str(new))
        value: object = Settings(_env_file=None)
        for part in path:
            value = getattr(value, part)
        assert value == new, name
        monkeypatch.delenv(name)
        changed += 1
    assert changed > 40


def test_check_command_passes_on_the_current_page() -> None:
    result = CliRunner().invoke(main, ["config", "docs", "--check"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_check_command_fails_on_a_stale_page_and_the_generator_fixes_it(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    page.write_text(settings_docs.render().replace("`8004`", "`9999`"), encoding="utf-8")
    stale = CliRunner().invoke(main, ["config", "docs", "--check", "--output", str(page)])
    assert stale.exit_code == 1
    assert "is stale" in stale.output and "avatar config docs" in stale.output

    written = CliRunner().invoke(main, ["config", "docs", "--output", str(page)])
    assert written.exit_code == 0, written.output
    assert page.read_text(encoding="utf-8") == settings_docs.render()
    assert CliRunner().invoke(main, ["config", "docs", "--check", "--output", str(page)]).exit_code == 0


def test_check_command_reports_a_missing_page(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["config", "docs", "--check", "--output", str(tmp_path / "none.md")])
    assert result.exit_code == 1
    assert "is missing" in result.output


class _Bare(BaseModel):
    """A group with an undocumented field."""

    knob: int = 1


class _SettingsWithAnUndocumentedField(Settings):
    bare: _Bare = Field(default=_Bare(), description="A test group.")
    loose: int = 3


def test_a_setting_without_description_is_refused(tmp_path: Path) -> None:
    model = _SettingsWithAnUndocumentedField
    assert settings_docs.undocumented(model) == ["AVATAR_BARE__KNOB", "AVATAR_LOOSE"]
    problem = settings_docs.check(settings_docs.DOCS_PATH, model)
    assert problem is not None and "AVATAR_BARE__KNOB" in problem
    with pytest.raises(ValueError, match="AVATAR_BARE__KNOB, AVATAR_LOOSE"):
        settings_docs.write(tmp_path / "c.md", model)
    assert not (tmp_path / "c.md").exists()


def test_a_shared_default_comes_from_its_source_class() -> None:
    info = Settings.model_fields["tts"].annotation.model_fields["idle_unload_s"]  # type: ignore[union-attr]
    assert info.json_schema_extra == {"default_from": "avatar_tts.config.ServiceConfig"}
    assert Settings(_env_file=None).tts.idle_unload_s == TTSServiceConfig().idle_unload_s
    with pytest.raises(TypeError, match="has no field 'nope'"):
        _shared(TTSServiceConfig, "nope", "a field that does not exist")


def test_defaults_that_must_stay_in_two_layers_agree() -> None:
    """The use case and the TTS service cannot import each other, so both declare ``hq_enabled``."""
    assert ConversationConfig().hq_enabled == TTSServiceConfig().hq_enabled
    assert ConversationConfig().language is None and Settings(_env_file=None).asr.language is None
