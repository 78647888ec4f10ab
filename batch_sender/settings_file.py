"""The configuration file (``batch-sender.toml``) and the credentials file.

The file holds any option of any command, and the gateway settings::

    db = "postgresql://batch@db/sms"          # top level: every command with that option
    gateway_url = "https://api.clickatell.com/soap/document_literal/webservice"
    log_format = "json"
    credentials_file = "/etc/batch-sender/credentials"

    [run]                                      # one command's options (dashes or underscores)
    country = "ZA"
    window = "08:00-20:00"
    metrics-file = "/var/lib/node_exporter/textfile/batch_sender.prom"

    [suppress]                                 # a group: its subcommands' options
    country = "ZA"

Precedence is flag > environment > file > default (the CLI hands the file to click as the
context's ``default_map``, which an environment variable beats). Credentials never come from
a flag: from ``CLICKATELL_API_ID``/``CLICKATELL_USER``/``CLICKATELL_PASSWORD``, else from the
``credentials_file`` (``KEY=VALUE`` lines), else from a ``[gateway]`` table; a file holding a
password must not be readable by group or others (``chmod 600``). This module knows nothing of
click: it reads and checks files; ``cli.common`` maps them onto commands.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch_sender.errors import InputError

__all__ = [
    "CONFIG_FILE",
    "CREDENTIAL_ENV",
    "ConfigFile",
    "Credential",
    "credentials",
    "load",
    "read_credentials_file",
]

CONFIG_FILE = "batch-sender.toml"  # looked for in the working directory
#: credential field → its environment variable
CREDENTIAL_ENV = {
    "api_id": "CLICKATELL_API_ID",
    "user": "CLICKATELL_USER",
    "password": "CLICKATELL_PASSWORD",
}
#: top-level keys that are not options of a command
SPECIAL_KEYS = frozenset({"credentials_file", "log_format"})
_PRIVATE_BITS = stat.S_IRWXG | stat.S_IRWXO  # any permission for group or others


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A parsed configuration file (``path`` None: there is none)."""

    path: Path | None = None
    top: Mapping[str, Any] = field(default_factory=dict)  # scalar keys, normalised
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # tables by command
    gateway: Mapping[str, str] = field(default_factory=dict)  # the [gateway] table

    @property
    def label(self) -> str:
        return f"file {self.path}" if self.path is not None else "file"


@dataclass(frozen=True, slots=True)
class Credential:
    """One credential's value and where it came from (environment, a file, or missing)."""

    value: str
    source: str


def key(name: str) -> str:
    """A file key as a Python parameter name: ``chunk-size`` → ``chunk_size``."""
    return name.strip().replace("-", "_").lower()


def load(path: Path | None, *, cwd: Path | None = None) -> ConfigFile:
    """Read ``path`` (it must exist), else ``batch-sender.toml`` in ``cwd`` if there is one."""
    if path is None:
        candidate = (cwd or Path.cwd()) / CONFIG_FILE
        if not candidate.is_file():
            return ConfigFile()
        path = candidate
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the configuration file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"configuration file {path}: {exc}") from exc
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    gateway: dict[str, str] = {}
    for name, value in data.items():
        if name == "gateway":
            if not isinstance(value, dict):
                raise InputError(f"configuration file {path}: [gateway] must be a table")
            gateway = {key(k): str(v) for k, v in value.items()}
            unknown = set(gateway) - set(CREDENTIAL_ENV)
            if unknown:
                raise InputError(
                    f"configuration file {path}: [gateway] knows only "
                    f"{', '.join(CREDENTIAL_ENV)}, not {', '.join(sorted(unknown))}"
                )
        elif isinstance(value, dict):
            sections[key(name)] = _normalised(path, value, f"[{name}]")
        else:
            if key(name) in top:
                raise InputError(
                    f"configuration file {path}: {name!r} is set twice (dashes and "
                    "underscores are the same key)"
                )
            top[key(name)] = value
    if gateway.get("password"):
        _require_private(path, "it holds a password")
    return ConfigFile(path=path, top=top, sections=sections, gateway=gateway)


def _normalised(path: Path, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A table's keys as parameter names; ``chunk-size`` and ``chunk_size`` both set is an error."""
    out: dict[str, Any] = {}
    for name, value in table.items():
        if key(name) in out:
            raise InputError(
                f"configuration file {path}: {where} sets {name!r} twice (dashes and underscores "
                "are the same key)"
            )
        out[key(name)] = value
    return out


def _require_private(path: Path, why: str) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if mode & _PRIVATE_BITS:
        raise InputError(
            f"{path} is readable by group or others ({stat.filemode(mode)}) and {why}: "
            f"chmod 600 {path}"
        )


def read_secret_file(path: Path, what: str) -> str:
    """The one secret ``path`` holds (its first non-blank line, stripped), for ``what``.

    Refused, like the credentials file, unless only its owner may read it: a secret passed as a
    flag shows in ``ps``, one in a file only to whoever may read the file.
    """
    _require_private(path, f"it holds the {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the {what} file {path}: {exc}") from exc
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    raise InputError(f"the {what} file {path} is empty")


def read_credentials_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``api_id``/``user``/``password`` or the ``CLICKATELL_*`` names).

    Quotes around a value are dropped and ``#`` starts a comment line, so the same file can
    serve as a systemd ``EnvironmentFile``. Refused unless only its owner may read it.
    """
    _require_private(path, "it holds credentials")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the credentials file {path}: {exc}") from exc
    by_env = {env.lower(): name for name, env in CREDENTIAL_ENV.items()}
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name = key(name)
        name = by_env.get(name, name)
        if not sep or name not in CREDENTIAL_ENV:
            raise InputError(
                f"credentials file {path}, line {number}: expected api_id=, user= or "
                "password= (or the CLICKATELL_* names)"
            )  # the line itself is never shown: it may hold the password
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[name] = value
    return found


def credentials(
    config: ConfigFile, environ: Mapping[str, str] | None = None
) -> dict[str, Credential]:
    """Each credential with its source: environment, then credentials file, then [gateway]."""
    env = os.environ if environ is None else environ
    from_file: dict[str, str] = {}
    file_label = ""
    from_env = env.get("BATCH_SENDER_CREDENTIALS_FILE")
    cred_path = from_env or config.top.get("credentials_file")
    if cred_path is not None and not isinstance(cred_path, str):
        raise InputError(
            f"configuration file {config.path}: credentials_file = {cred_path!r}: expected a "
            "path in quotes"
        )
    if cred_path:
        path = Path(cred_path).expanduser()
        if not from_env and not path.is_absolute() and config.path is not None:
            path = config.path.parent / path  # relative to the file that names it
        from_file = read_credentials_file(path)
        file_label = f"credentials file {path}"
    out: dict[str, Credential] = {}
    for name, env_name in CREDENTIAL_ENV.items():
        if env.get(env_name):
            out[name] = Credential(env[env_name], f"environment {env_name}")
        elif from_file.get(name):
            out[name] = Credential(from_file[name], file_label)
        elif config.gateway.get(name):
            out[name] = Credential(config.gateway[name], f"{config.label} [gateway]")
        else:
            out[name] = Credential("", "missing")
    return out
