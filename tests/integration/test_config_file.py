"""batch-sender.toml: precedence flag > environment > file > default, credentials files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv


def show(bs: Any, *args: str, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    out = bs(*args, env=env)
    assert out.exit_code == 0, out.stderr
    return {row["name"]: row for row in json.loads(out.stdout)["settings"]}


def config(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / "batch-sender.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_precedence_is_flag_then_environment_then_file_then_default(bs, tmp_path):
    path = config(
        tmp_path,
        'gateway_url = "http://file.example/soap"\n[run]\ncountry = "ZA"\nchunk-size = 50\n',
    )
    base = ("--config", str(path), "config", "show", "run")
    no_env = {"BATCH_SENDER_GATEWAY_URL": ""}

    rows = show(bs, *base, "--json", env=no_env)
    assert rows["chunk_size"]["value"] == 50 and rows["chunk_size"]["source"].startswith("file")
    assert rows["gateway_url"]["value"] == "http://file.example/soap"
    assert rows["rate"]["source"] == "default"

    rows = show(bs, *base, "--json", env={"BATCH_SENDER_GATEWAY_URL": "http://env.example/soap"})
    assert rows["gateway_url"]["value"] == "http://env.example/soap"
    assert rows["gateway_url"]["source"] == "environment BATCH_SENDER_GATEWAY_URL"

    rows = show(
        bs,
        *base,
        "--json",
        "--gateway-url",
        "http://flag.example/soap",
        "--chunk-size",
        "7",
        env={"BATCH_SENDER_GATEWAY_URL": "http://env.example/soap"},
    )
    assert rows["gateway_url"]["value"] == "http://flag.example/soap"
    assert rows["gateway_url"]["source"] == "flag"
    assert rows["chunk_size"]["source"] == "flag"


def test_the_file_in_the_working_directory_is_applied_to_a_real_run(
    bs, simulator, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    config(tmp_path, '[run]\ncountry = "ZA"\nname = "from-file"\n')
    src = write_csv(tmp_path / "c.csv", [("082 100 2000", "x")])  # national: needs --country
    out = bs("run", str(src), "--text", "Hi", "--json", sim=simulator)
    assert out.exit_code == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["campaign"] == "from-file"
    assert summary["counts"] == {"sent": 1}


def test_an_unknown_key_is_a_configuration_error(bs, tmp_path):
    path = config(tmp_path, "[run]\nchunksize = 5\n")
    out = bs("--config", str(path), "config", "show")
    assert out.exit_code == 2
    assert "chunksize" in out.stderr


def test_a_missing_config_file_named_explicitly_is_an_error(bs, tmp_path):
    out = bs("--config", str(tmp_path / "nope.toml"), "config", "show")
    assert out.exit_code == 2


def test_credentials_come_from_a_private_file_and_are_masked(bs, simulator, tmp_path):
    creds = simulator.credentials
    secret = tmp_path / "credentials"
    secret.write_text(
        f"CLICKATELL_API_ID={creds.api_id}\nCLICKATELL_USER={creds.user}\n"
        f'CLICKATELL_PASSWORD="{creds.password}"\n'
    )
    os.chmod(secret, 0o600)
    path = config(tmp_path, f'credentials_file = "{secret}"\ngateway_url = "{simulator.url}"\n')
    env = {"CLICKATELL_API_ID": "", "CLICKATELL_USER": "", "CLICKATELL_PASSWORD": ""}

    rows = show(bs, "--config", str(path), "config", "show", "--json", env=env)
    assert rows["gateway.password"]["value"] == "********"
    assert rows["gateway.user"]["value"] == creds.user
    assert rows["gateway.user"]["source"] == f"credentials file {secret}"

    src = write_csv(tmp_path / "c.csv", [("27821000000", "x")])
    out = bs("--config", str(path), "run", str(src), "--text", "Hi", "--json", env=env)
    assert out.exit_code == 0, out.stderr
    assert simulator.accepted_count == 1
    assert creds.password not in out.stdout + out.stderr


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_a_credentials_file_readable_by_others_is_refused(bs, tmp_path, mode):
    secret = tmp_path / "credentials"
    secret.write_text("password=hunter2\n")
    os.chmod(secret, mode)
    path = config(tmp_path, f'credentials_file = "{secret}"\n')
    out = bs("--config", str(path), "config", "show")
    assert out.exit_code == 2
    assert "chmod 600" in out.stderr
    assert "hunter2" not in out.stderr


def test_a_config_file_holding_a_password_must_be_private(bs, tmp_path):
    path = config(tmp_path, '[gateway]\nuser = "u"\npassword = "hunter2"\n', mode=0o644)
    assert bs("--config", str(path), "config", "show").exit_code == 2
    os.chmod(path, 0o600)
    rows = show(
        bs,
        "--config",
        str(path),
        "config",
        "show",
        "--json",
        env={"CLICKATELL_PASSWORD": "", "CLICKATELL_USER": ""},
    )
    assert rows["gateway.password"]["value"] == "********"
    assert rows["gateway.user"]["source"].endswith("[gateway]")


def test_the_database_password_is_masked_in_config_show(bs, tmp_path):
    path = config(tmp_path, 'db = "postgresql://batch:s3cret@db.example/sms"\n')
    out = bs("--config", str(path), "config", "show", env={"BATCH_SENDER_DB": ""})
    assert out.exit_code == 0, out.stderr
    assert "s3cret" not in out.stdout
    assert "db.example" in out.stdout
