"""Configuration: API key, base URL, default workflow id, daily spending limit.

Precedence: environment variable, then what the user saved from the editor's settings (kept in the pack's
data folder: ComfyUI's user directory when ComfyUI is present, ``~/.config/comfyui-gpugeek`` otherwise, or
``GPUGEEK_HOME``). The key file is written owner-only and never read back to the browser.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError
from .redact import register_secret
from .transport import is_loopback, is_private, origin

DEFAULT_BASE_URL = "https://comfyapi.gpugeek.com"
KEY_FILE = "api_key"
TOKEN_FILE = "target_token"
COMFY_KEY_FILE = "comfy_api_key"
# A Comfy API v2 target is written "v2:" and its base URL; a key from COMFY_API_KEY goes to COMFY_BASE_URL's
# address (comfy-sdk's own convention) or Comfy Cloud's, unless GPUGEEK_TARGET names a v2 address.
V2_PREFIX = "v2:"
COMFY_CLOUD_URL = "https://cloud.comfy.org"
SETTINGS_FILE = "settings.json"
_data_dir: Path | None = None


def set_data_dir(path) -> None:
    """Called by the node layer with ``<ComfyUI user dir>/gpugeek`` so nothing lives in the pack folder."""
    global _data_dir
    _data_dir = Path(path)


def data_dir() -> Path:
    if os.environ.get("GPUGEEK_HOME"):
        d = Path(os.environ["GPUGEEK_HOME"])
    elif _data_dir is not None:
        d = _data_dir
    else:
        d = Path.home() / ".config" / "comfyui-gpugeek"
    d.mkdir(parents=True, exist_ok=True)
    return d


class ApiKey:
    """A key that never shows itself: repr, str and format all print a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        value = (value or "").strip()
        if not value:
            raise ConfigError("The API key is empty", hint="Paste your key in Settings > GPUGeek or set GPUGEEK_API_KEY.")
        if any(c.isspace() for c in value) or not value.isprintable():
            raise ConfigError("The API key contains spaces or unprintable characters",
                              hint="Copy it again from the GPUGeek console and paste it in Settings > GPUGeek.")
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    @property
    def last4(self) -> str:
        return self._value[-4:]

    def __repr__(self) -> str:
        return f"ApiKey(...{'*' * 4})"

    __str__ = __repr__

    def __format__(self, spec) -> str:
        return repr(self)

    def __eq__(self, other) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("ApiKey", len(self._value)))

    def __reduce__(self):  # never pickled into anything (history, caches)
        raise TypeError("ApiKey cannot be pickled")


_WF_RE = re.compile(r"^\s*(\d{1,19})\s*$")


def parse_workflow_id(value) -> int:
    """A GPUGeek workflow id: a positive integer (15 digits in practice), kept exact."""
    if isinstance(value, bool):
        raise ConfigError("The workflow id must be a number such as 123456789012345, not true/false")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError("The workflow id must be a positive number")
        return value
    if isinstance(value, float):
        raise ConfigError("The workflow id must be written as text or an integer: a float loses digits")
    text = "" if value is None else str(value)
    if not text.strip():
        raise ConfigError("No workflow id: fill in the gateway's workflow_id, or set a default in "
                          "Settings > GPUGeek (or GPUGEEK_WORKFLOW_ID)")
    m = _WF_RE.match(text)
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(f"The workflow id {text.strip()[:40]!r} is not a number: copy the digits of the "
                          "workflow id from the GPUGeek console")
    return int(m.group(1))


def check_base_url(url: str, *, allow_lan_http: bool = False) -> str:
    """https anywhere; plain http only for loopback (or, when asked, a LAN address)."""
    url = (url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"The base URL {url[:80]!r} is not an http(s) URL such as {DEFAULT_BASE_URL}")
    if parts.username or parts.password:
        raise ConfigError("The base URL must not contain a user name or password")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        if not (allow_lan_http and is_private(parts.hostname)):
            raise ConfigError(f"The base URL {url[:80]!r} uses plain http to a remote host, which would send "
                              "your API key unencrypted: use https")
    return url


def json_bytes(value, **kw) -> bytes:
    """``value`` as compact JSON in UTF-8, readable where it can be, for any string Python holds: a name that is
    not valid UTF-8 (a file name Linux lists with surrogates, ``caf\\udce9``) cannot be encoded as UTF-8, so a
    value holding one is written escaped (``\\udce9``), which reads back as the very same string."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), **kw)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), **kw).encode("ascii")


def write_private(path: Path, data: str | bytes | list) -> None:
    """Atomically write a file readable by its owner only (the pack's every file under the user folder: secrets,
    the journal, the cloud's lists): a reader sees the old file or the new one, never half of one. ``data`` is
    text, bytes, or a list of byte pieces (a big file written without joining them first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    pieces = [data.encode("utf-8")] if isinstance(data, str) else [data] if isinstance(data, bytes) else data
    try:
        os.chmod(tmp, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.writelines(pieces)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        os.chmod(path, 0o600)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _save_secret(name: str, value: str | None) -> None:
    """Write a secret owner-only (or, with ``None``/empty, forget it); it is registered for redaction."""
    path = data_dir() / name
    if not value or not value.strip():
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    register_secret(value.strip())
    write_private(path, value.strip())


def _read_secret(name: str) -> str:
    """A secret saved with :func:`_save_secret` ("" when there is none)."""
    try:
        return (data_dir() / name).read_text("utf-8").strip()
    except FileNotFoundError:
        return ""


def save_api_key(value: str | None) -> None:
    """Save (or with ``None``/empty, forget) the key entered in the editor."""
    _save_secret(KEY_FILE, ApiKey(value).reveal() if value and value.strip() else None)


def load_settings() -> dict:
    try:
        return json.loads((data_dir() / SETTINGS_FILE).read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def save_settings(**changes) -> dict:
    current = load_settings()
    for k, v in changes.items():
        if v is None or v == "":
            current.pop(k, None)
        else:
            current[k] = v
    write_private(data_dir() / SETTINGS_FILE, json.dumps(current, indent=1))
    return current


@dataclass
class Config:
    api_key: ApiKey | None
    base_url: str = DEFAULT_BASE_URL
    workflow_id: int | None = None
    daily_limit: float | None = None
    key_source: str = "none"
    problems: list = field(default_factory=list)
    target: str = "gpugeek"            # "gpugeek" or the URL of a ComfyUI server
    target_token: str | None = None    # bearer token or user:password for a ComfyUI server behind a proxy
    allow_lan_http: bool = False       # plain http to a LAN ComfyUI server, only when the user opts in
    env_base_url: str = DEFAULT_BASE_URL  # where a key from the environment may go (GPUGEEK_BASE_URL or default)
    token_source: str = "none"
    comfy_api_key: ApiKey | None = None   # a Comfy API key (v2 targets), sent only to comfy_key_url's origin
    comfy_key_url: str | None = None
    comfy_key_source: str = "none"

    def comfy_key_for(self, base: str) -> ApiKey | None:
        """The Comfy API key, for the v2 address it was configured for and no other."""
        if self.comfy_api_key is None or not self.comfy_key_url:
            return None
        return self.comfy_api_key if origin(base) == origin(self.comfy_key_url) else None

    def __repr__(self) -> str:
        return (f"Config(target={self.target!r}, base_url={self.base_url!r}, key_set={self.api_key is not None}, "
                f"workflow_id={self.workflow_id!r})")

    def require_key(self) -> ApiKey:
        if self.api_key is None:
            raise ConfigError("No GPUGeek API key is set: paste it in Settings > GPUGeek (or set "
                              "GPUGEEK_API_KEY) and run again", hint="")
        return self.api_key

    def resolve_workflow_id(self, widget_value) -> int:
        if widget_value not in (None, "") and str(widget_value).strip():
            return parse_workflow_id(widget_value)
        if self.workflow_id is None:
            return parse_workflow_id(None)
        return self.workflow_id

    def public(self) -> dict:
        """What the browser may learn: whether a key is set and its last four characters, never the key."""
        return {"key_set": self.api_key is not None,
                "key_last4": self.api_key.last4 if self.api_key else None,
                "key_source": self.key_source, "base_url": self.base_url,
                "workflow_id": str(self.workflow_id) if self.workflow_id else "",
                "daily_limit": self.daily_limit, "problems": list(self.problems), "target": self.target,
                "target_token_set": bool(self.target_token), "allow_lan_http": self.allow_lan_http,
                "comfy_key_set": self.comfy_api_key is not None,
                "comfy_key_last4": self.comfy_api_key.last4 if self.comfy_api_key else None,
                "comfy_key_source": self.comfy_key_source, "comfy_key_url": self.comfy_key_url,
                "whole_workflow": whole_workflow_default(),
                "whole_workflow_env": bool(os.environ.get("GPUGEEK_WHOLE_WORKFLOW", "").strip()),
                "transfer": transfer_default(),
                "transfer_env": bool(os.environ.get("GPUGEEK_TRANSFER", "").strip()),
                "send_ahead": send_ahead_slots(),
                "send_ahead_env": bool(os.environ.get("GPUGEEK_SEND_AHEAD", "").strip()),
                "receive_models": bool(load_settings().get("receive_models")),
                "receive_models_env": bool(os.environ.get("GPUGEEK_RECEIVE_MODELS", "").strip())}


def load_config(env=None) -> Config:
    """Read the configuration fresh (cheap: two small files), so a key saved in the editor applies at once."""
    env = os.environ if env is None else env
    saved = load_settings()
    problems: list = []
    key, source, base, env_base = _key_and_base(env, saved, problems)
    wf = None
    wf_raw = env.get("GPUGEEK_WORKFLOW_ID", "").strip() or str(saved.get("workflow_id") or "")
    if wf_raw:
        try:
            wf = parse_workflow_id(wf_raw)
        except ConfigError as e:
            problems.append(str(e))
    limit = None
    lim_raw = env.get("GPUGEEK_DAILY_LIMIT", "").strip() or str(saved.get("daily_limit") or "")
    if lim_raw:
        try:
            limit = float(lim_raw)
            if limit <= 0:
                limit = None
        except ValueError:
            problems.append(f"GPUGEEK_DAILY_LIMIT {lim_raw[:20]!r} is not a number; no limit applies")
    tr_raw = env.get("GPUGEEK_TRANSFER", "").strip().lower()
    if tr_raw and tr_raw not in TRANSFERS:
        problems.append(f"GPUGEEK_TRANSFER {tr_raw[:20]!r} is neither lossless nor compact; images come back lossless")
    target, allow_lan, token, token_source = _target_and_token(env, saved, problems)
    comfy_key, comfy_url, comfy_source = _comfy_key(env, saved, problems, allow_lan)
    return Config(api_key=key, base_url=base, workflow_id=wf, daily_limit=limit, key_source=source,
                  problems=problems, target=target, target_token=token or None, allow_lan_http=allow_lan,
                  env_base_url=env_base, token_source=token_source, comfy_api_key=comfy_key,
                  comfy_key_url=comfy_url, comfy_key_source=comfy_source)


def _key_and_base(env, saved: dict, problems: list):
    """The API key, where it comes from, and the one base URL it may go to (and the environment's)."""
    key, source = None, "none"
    raw = env.get("GPUGEEK_API_KEY", "").strip()
    if raw:
        key, source = ApiKey(raw), "environment"
    elif text := _read_secret(KEY_FILE):
        key, source = ApiKey(text), "saved"
    env_base = check_base_url(env.get("GPUGEEK_BASE_URL", "").strip() or DEFAULT_BASE_URL)
    if source == "environment":
        # a key from the environment goes only to the base URL from the environment (or the default)
        base = env_base
        if saved.get("base_url") and check_base_url(saved["base_url"]) != base:
            problems.append(f"The base URL saved in Settings ({saved['base_url'][:80]}) is not used: the API key "
                            f"comes from GPUGEEK_API_KEY, which only goes to {base}")
    else:
        base = check_base_url(env.get("GPUGEEK_BASE_URL", "").strip() or saved.get("base_url") or DEFAULT_BASE_URL)
        bound = saved.get("key_base_url")
        if key is not None and bound and check_base_url(bound) != base:
            key, source = None, "none"  # a saved key only ever goes to the address it was saved for
            problems.append(f"The saved API key was saved for {bound[:80]}, not {base}: paste it again")
    return key, source, base, env_base


def _target_and_token(env, saved: dict, problems: list):
    """Where cloud parts run, whether plain http to the LAN is allowed, and the server token bound to it."""
    target = (env.get("GPUGEEK_TARGET", "").strip() or str(saved.get("target") or "") or "gpugeek").rstrip("/")
    allow_lan = (env.get("GPUGEEK_ALLOW_LAN_HTTP", "").strip().lower() in ("1", "true", "yes")
                 or bool(saved.get("allow_lan_http")))
    if target.lower() != "gpugeek":
        try:
            # one server, or a pool of servers separated by commas
            target = ",".join(check_target_url(t.strip(), allow_lan_http=allow_lan)
                              for t in target.split(",") if t.strip())
        except ConfigError as e:
            problems.append(str(e))
    token = env.get("GPUGEEK_TARGET_TOKEN", "").strip()
    token_source = "environment" if token else "none"
    if not token:
        token = _read_secret(TOKEN_FILE)
        token_source = "saved" if token else "none"
        bound = saved.get("token_target")
        if token and bound and bound.rstrip("/") != target:
            token, token_source = "", "none"  # a saved token only ever goes to the server it was saved for
    if token:
        register_secret(token)
    return target, allow_lan, token, token_source


def save_target_token(value: str | None) -> None:
    """A ComfyUI server's token (or user:password), kept like the API key: owner-only, never read back."""
    _save_secret(TOKEN_FILE, value)


def whole_workflow_default(env=None) -> bool:
    """Whether a prompt with no gateway runs in the cloud when it does not say (its ``extra_data`` key
    ``gpugeek_whole_workflow`` wins): ``GPUGEEK_WHOLE_WORKFLOW``, else the setting saved from the editor."""
    env = os.environ if env is None else env
    raw = env.get("GPUGEEK_WHOLE_WORKFLOW", "").strip().lower()
    if raw:
        return raw in ("1", "true", "yes", "on")
    return bool(load_settings().get("whole_workflow"))


# How a cloud part's images come back (the gateway's ``transfer``): lossless PNG, or compact (high-quality
# lossy WebP, several times fewer bytes; masks stay exact). ``settings`` on a gateway means this default.
TRANSFERS = ("lossless", "compact")
SETTINGS_TRANSFER = "settings"


def transfer_default(env=None) -> str:
    """How images come back when a gateway says ``settings``: ``GPUGEEK_TRANSFER``, else the setting saved
    from the editor, else lossless (an unknown value is lossless too: nothing is lost by mistake)."""
    env = os.environ if env is None else env
    raw = env.get("GPUGEEK_TRANSFER", "").strip().lower() or str(load_settings().get("transfer") or "")
    return raw if raw in TRANSFERS else "lossless"


def transfer_of(choice) -> str:
    """A gateway's ``transfer`` widget value -> lossless or compact."""
    choice = str(choice or "").strip().lower()
    return choice if choice in TRANSFERS else transfer_default()


def is_comfy_target(target: str | None) -> bool:
    """Not GPUGeek: a ComfyUI server (or a pool of them), or a Comfy API v2 address; no workflow id is needed."""
    return bool(target) and target.strip().lower() != "gpugeek"


def is_v2_target(target: str | None) -> bool:
    return str(target or "").strip().lower().startswith(V2_PREFIX)


def check_target_url(url: str, *, allow_lan_http: bool = False) -> str:
    """One place a cloud part can run: a ComfyUI server's URL, or ``v2:`` and a Comfy API v2 base URL."""
    if is_v2_target(url):
        return V2_PREFIX + check_base_url(url.strip()[len(V2_PREFIX):], allow_lan_http=allow_lan_http)
    return check_base_url(url, allow_lan_http=allow_lan_http)


def first_v2_url(target: str | None) -> str | None:
    """The base URL of the first v2 address in a target (one, or a pool separated by commas)."""
    v2 = [t.strip()[len(V2_PREFIX):].strip().rstrip("/") for t in str(target or "").split(",") if is_v2_target(t)]
    return v2[0] if v2 else None


def _comfy_key(env, saved: dict, problems: list, allow_lan: bool = False):
    """The Comfy API key, the one v2 address it may go to, and where it comes from. From COMFY_API_KEY it goes to
    the v2 address of GPUGEEK_TARGET, else COMFY_BASE_URL, else Comfy Cloud; saved from the settings, to the
    address it was saved for (``comfy_key_url``)."""
    raw, source = env.get("COMFY_API_KEY", "").strip(), "environment"
    url = first_v2_url(env.get("GPUGEEK_TARGET")) or env.get("COMFY_BASE_URL", "").strip() or COMFY_CLOUD_URL
    if not raw:
        source, url, raw = "saved", saved.get("comfy_key_url"), _read_secret(COMFY_KEY_FILE)
    if not raw:
        return None, None, "none"
    if not url:
        problems.append("The saved Comfy API key is not bound to an address: paste it again in Settings > GPUGeek")
        return None, None, "none"
    try:
        return ApiKey(raw), check_base_url(url, allow_lan_http=allow_lan), source
    except ConfigError:
        problems.append("The Comfy API key (COMFY_API_KEY or the one saved in Settings > GPUGeek) is not usable: "
                        "paste it again, without spaces, and use https for its address")
        return None, None, "none"


def save_comfy_api_key(value: str | None) -> None:
    """A Comfy API key (v2 targets), kept like the GPUGeek key: owner-only, never read back."""
    try:
        key = ApiKey(value).reveal() if value and value.strip() else None
    except ConfigError:
        raise ConfigError("The Comfy API key contains spaces or unprintable characters: copy it again from your "
                          "Comfy account and paste it in Settings > GPUGeek", hint="") from None
    _save_secret(COMFY_KEY_FILE, key)


# Queued prompts' cloud parts sent ahead (offload/run/ahead.py): at most this many tasks ahead at once by default (the
# prompt ComfyUI runs is not counted). Four: the usual batch of variations (4 queued prompts then take about the time of
# one: bench/queued.py), and about what a platform plan of a few GPUs runs side by side. More would put tasks in the
# platform's queue for no gain on such a plan, and pay for the minutes a task ran before its prompt was deleted: each
# task ahead is money spent on a guess that the user keeps the prompt. 8 prompts take two rounds at 4 (about 2x one);
# a larger plan sets up to SEND_AHEAD_MAX.
SEND_AHEAD_DEFAULT = 4
# The most tasks ahead a setting may ask for: ComfyUI's queue of eight variations (the runs picker's top) at once.
SEND_AHEAD_MAX = 8


def send_ahead_slots(env=None) -> int:
    """How many queued prompts' cloud parts may run ahead in the cloud at once; 0: off (a platform plan that runs one task
    at a time, where sending ahead only queues there). ``GPUGEEK_SEND_AHEAD`` (0/off/false, on/true, or a number),
    else the setting saved from the editor, else SEND_AHEAD_DEFAULT."""
    env = os.environ if env is None else env
    raw = env.get("GPUGEEK_SEND_AHEAD", "").strip().lower()
    if not raw:
        saved = load_settings().get("send_ahead")
        raw = "" if saved is None else str(saved).strip().lower()
    if raw in ("off", "false", "no"):
        return 0
    if raw in ("", "on", "true", "yes"):
        return SEND_AHEAD_DEFAULT
    try:
        return max(0, min(SEND_AHEAD_MAX, int(float(raw))))
    except ValueError:
        return SEND_AHEAD_DEFAULT
