"""Site settings: the config file, its validation and the explicit-path rule."""

import pytest

from tui.errors import PolicyError
from tui.settings import SiteSettings, load_config_file


def test_missing_default_file_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_config_file() == {}


def test_missing_named_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYTRIAGE_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(PolicyError, match="absent.toml not found"):
        load_config_file()


def test_read_only_and_id_sources_are_read(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[site]\nread_only = true\n[site.id_sources]\npiv = ["guid", "cplc"]\n')
    settings = SiteSettings.load(path)
    assert settings.read_only is True
    assert settings.id_sources["piv"] == ["guid", "cplc"]


@pytest.mark.parametrize("text, fragment", [
    ("[site]\nread_only = 1\n", "read_only must be true or false"),
    ("[site.id_sources]\nbogus = [\"cplc\"]\n", "unknown profile 'bogus'"),
    ("[site.id_sources]\npiv = [\"imei\"]\n", "unknown source"),
    ("[site\n", "not valid TOML"),
])
def test_bad_values_name_the_problem(tmp_path, text, fragment):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=fragment):
        SiteSettings.load(path)
