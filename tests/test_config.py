"""Configuration: key, base URL, workflow id; the key never shows itself."""
import os
import stat

import pytest
from conftest import SECRET_KEY, core, produced

C = core("config")
E = core("errors")


def test_env_key_wins_and_saved_key_is_owner_only(monkeypatch):
    C.save_api_key("sk-saved-key-1234")
    path = C.data_dir() / C.KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cfg = C.load_config()
    assert cfg.key_source == "saved" and cfg.api_key.reveal() == "sk-saved-key-1234"
    monkeypatch.setenv("GPUGEEK_API_KEY", SECRET_KEY)
    cfg = C.load_config()
    assert cfg.key_source == "environment" and cfg.public()["key_last4"] == SECRET_KEY[-4:]
    for text in (repr(cfg), str(cfg), repr(cfg.api_key), f"{cfg.api_key}", str(cfg.public())):
        produced(text)
        assert SECRET_KEY not in text
    C.save_api_key(None)
    assert not path.exists()


def test_base_url_rules(monkeypatch):
    assert C.check_base_url("https://comfyapi.gpugeek.com/") == "https://comfyapi.gpugeek.com"
    assert C.check_base_url("http://127.0.0.1:8190") == "http://127.0.0.1:8190"
    assert C.check_base_url("http://localhost:1") == "http://localhost:1"
    with pytest.raises(E.ConfigError) as ei:
        C.check_base_url("http://comfyapi.gpugeek.com")
    assert "unencrypted" in str(ei.value)
    with pytest.raises(E.ConfigError):
        C.check_base_url("ftp://x")
    monkeypatch.setenv("GPUGEEK_BASE_URL", "http://10.0.0.5")
    with pytest.raises(E.ConfigError):
        C.load_config()


@pytest.mark.parametrize("value,ok", [("123456789012345", 123456789012345), (" 999999999999999 ", 999999999999999),
                                      (123456789012345, 123456789012345)])
def test_workflow_id_exact(value, ok):
    assert C.parse_workflow_id(value) == ok


@pytest.mark.parametrize("value", ["", None, "12a", "1e15", 1.5e14, True, "-5", "0"])
def test_workflow_id_bad(value):
    with pytest.raises(E.ConfigError):
        C.parse_workflow_id(value)


def test_default_workflow_id_and_limit_from_env(monkeypatch):
    monkeypatch.setenv("GPUGEEK_WORKFLOW_ID", "123456789012345")
    monkeypatch.setenv("GPUGEEK_DAILY_LIMIT", "5")
    cfg = C.load_config()
    assert cfg.resolve_workflow_id("") == 123456789012345 and cfg.resolve_workflow_id("7") == 7
    assert cfg.daily_limit == 5.0
    with pytest.raises(E.ConfigError):
        cfg.require_key()


def test_api_key_cannot_be_pickled():
    import pickle
    with pytest.raises(TypeError):
        pickle.dumps(C.ApiKey(SECRET_KEY))
