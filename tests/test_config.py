"""Configuration: a wrong or missing setting stops start-up with a message that names it."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from tests.conftest import HOOK_SECRET
from worker import redisio
from worker.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent

GOOD = f"""
[sources.hostfact]
api_url = "https://billing.example.com/Pro/apiv2/api.php"
api_key = "k1"
hook_secrets = ["{HOOK_SECRET}"]

[targets.wefact]
dialect = "wefact"
api_url = "https://api.mijnwefact.nl/v2/"
api_key = "k2"

[routes.sales]
source = "hostfact"
target = "wefact"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "factsync.toml"
    path.write_text(text)
    return path


def test_a_good_file_gives_routes_with_their_administrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FACTSYNC_CONFIG", raising=False)
    settings = load_settings(write(tmp_path, GOOD))
    (route,) = settings.routes_of("hostfact")
    assert (route.name, route.source, route.target, route.ledger) == ("sales", "hostfact", "wefact", "sales")
    target = settings.target("wefact")
    assert target.dialect == "wefact" and target.api_key.get_secret_value() == "k2"
    assert "k2" not in repr(target), "a key must not show in a repr (logs, tracebacks)"
    assert settings.redis_url is None


def test_the_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTSYNC_REDIS_URL", "redis://redis.example:6379/2")
    monkeypatch.setenv("FACTSYNC_TARGETS__WEFACT__API_KEY", "from-env")
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.redis_url == "redis://redis.example:6379/2"
    assert settings.target("wefact").api_key.get_secret_value() == "from-env"


def test_the_shipped_example_is_whole_but_its_placeholder_secret_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match=r"hook_secrets\[0\] is the placeholder of an example file"):
        load_settings(ROOT / "factsync.example.toml")
    monkeypatch.setenv("FACTSYNC_SOURCES__HOSTFACT__HOOK_SECRETS", f'["{HOOK_SECRET}"]')
    settings = load_settings(ROOT / "factsync.example.toml")
    assert list(settings.routes) == ["sales"]


def _php_example_secret() -> str:
    text = (ROOT / "deploy" / "hostfact" / "factsync-config.example.php").read_text()
    match = re.search(r"'secret' => '([^']*)'", text)
    assert match, "the forwarder's config example names a secret"
    return match.group(1)


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("supersecret", "is not a Standard Webhooks secret"),
        ("whsec_REPLACE_ME_WITH_BASE64", "placeholder"),
        ("whsec_REPLACEWITHBASE64OFATLEAST24RANDOMBYTES00", "placeholder"),
        (_php_example_secret(), "placeholder"),
        ("whsec_YWJj", "holds 3 bytes"),
        ("whsec_" + base64.b64encode(b"23 bytes are not enough").decode(), "holds 23 bytes"),
        ("whsec_not base64!", "no base64"),
    ],
)
def test_a_weak_or_placeholder_hook_secret_is_refused(tmp_path: Path, secret: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, GOOD.replace(HOOK_SECRET, secret)))
    message = str(caught.value)
    assert "sources.hostfact: hook_secrets[0]" in message and problem in message
    assert "os.urandom(24)" in message, "the message says how to make a good one"
    assert secret not in message or len(secret) < 8


@pytest.mark.parametrize(
    ("dashboard", "problem"),
    [
        ('token = "short"', "token has 5 characters"),
        ('token = "REPLACE-WITH-A-LONG-RANDOM-TOKEN"', "placeholder"),
        ('username = "ops"\npassword = "hunter2"', "password has 7 characters"),
    ],
)
def test_a_guessable_dashboard_credential_is_refused(tmp_path: Path, dashboard: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, GOOD + "\n[dashboard]\n" + dashboard + "\n"))
    assert "dashboard" in str(caught.value) and problem in str(caught.value)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda t: t.replace('target = "wefact"\n', 'target = "nowhere"\n'), "routes.sales.target"),
        (lambda t: t.replace('api_key = "k2"\n', ""), "targets.wefact.api_key"),
        (lambda t: t.replace('dialect = "wefact"', 'dialect = "exact"'), "targets.wefact.dialect"),
        (lambda t: t.replace("https://api.mijnwefact.nl/v2/", "not a url"), "targets.wefact.api_url"),
        (lambda t: t.replace(HOOK_SECRET, "plain-password"), "hook_secrets[0]"),
        (lambda t: t.replace('hook_secrets = ["', 'hook_secret = ["'), "sources.hostfact.hook_secret"),
        (lambda t: t + '\nledger = "purchase"\n', "routes.sales.creditors"),
        (lambda t: "listen_port = 99999\n" + t, "listen_port"),
        (lambda t: t.replace("[routes.sales]", "[routes.sales"), "factsync.toml"),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, change, named: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, change(GOOD)))
    assert named in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does-not-exist\.toml does not exist"):
        load_settings(tmp_path / "does-not-exist.toml")


def test_a_secret_never_appears_in_the_error(tmp_path: Path) -> None:
    text = GOOD.replace('api_url = "https://api.mijnwefact.nl/v2/"', 'api_url = "nope"')
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert "k1" not in str(caught.value) and HOOK_SECRET not in str(caught.value)


def test_the_redis_password_is_a_secret_the_logs_blank(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, 'redis_url = "redis://:s3cr3t-redis-pw@redis:6379/0"\n' + GOOD))
    assert "s3cr3t-redis-pw" in settings.secrets()


def test_a_sentinel_groups_url_is_read_with_its_sentinels_service_and_passwords(tmp_path: Path) -> None:
    url = (
        "redis+sentinel://factsync:s3cr3t%40pw@10.0.0.1,10.0.0.2:26380,[::1]/billing/2"
        "?sentinel_password=sentinel-pw"
    )
    settings = load_settings(write(tmp_path, f'redis_url = "{url}"\n' + GOOD))
    address = redisio.parse(url)
    assert address.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26379))
    assert (address.service, address.db, address.username) == ("billing", 2, "factsync")
    assert address.password == "s3cr3t@pw" and address.sentinel_auth == {"password": "sentinel-pw"}
    # Both passwords, and the one as the URL writes it, are blanked wherever they would appear.
    assert {"s3cr3t@pw", "s3cr3t%40pw", "sentinel-pw"} <= set(settings.secrets())
    assert (
        address.describe()
        == "redis+sentinel://factsync:***@10.0.0.1:26379,10.0.0.2:26380,[::1]:26379/billing/2"
    )
    assert "pw" not in repr(address)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://:pw-1@redis:6379/0", "scheme http:// is not one factsync knows"),
        (
            "redis://:pw-1@a:6379,b:6379/0",
            "names several hosts: that is a Sentinel group, write redis+sentinel://",
        ),
        ("redis+sentinel://:pw-1@a:26379,b:26379", "names no service"),
        ("redis+sentinel://:pw-1@a/billing/x", "database 'x' is not a number"),
        ("redis://:pw-1@redis:80000/0", "port '80000' of host redis is not a port number"),
        ("redis://:pw-1@redis/0?ssl_ca_certs=/etc/ca.pem", "option 'ssl_ca_certs' is for TLS: use rediss://"),
        (
            "rediss://:pw-1@redis/0?ssl_ca_certs=/no/such/ca.pem",
            "option ssl_ca_certs: no file at /no/such/ca.pem",
        ),
        ("rediss://:pw-1@redis/0?ssl_cert_reqs=maybe", "option ssl_cert_reqs is 'maybe'"),
        (
            "redis://:pw-1@redis/0?sentinel_password=x",
            "option 'sentinel_password' is for redis+sentinel:// only",
        ),
        ("redis://:pw-1@redis/0?retries=3", "option 'retries' is not one factsync knows"),
        (
            "redis://:pw#1@redis/0",
            "has a '#', or an '@' after the host: a password with '/', '?' or '#' must be written %2F",
        ),
        (
            "redis://u:pw/1@redis/0",
            "has a '#', or an '@' after the host: a password with '/', '?' or '#' must be written %2F",
        ),
    ],
)
def test_a_redis_url_factsync_cannot_use_is_refused_by_name_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    monkeypatch.setenv("FACTSYNC_REDIS_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, GOOD))
    message = str(caught.value)
    assert f"FACTSYNC_REDIS_URL (environment, redis_url): {says}" in message
    assert "pw-1" not in message and "pw" not in message.split("redis_url):")[1]


def test_a_misspelt_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    text = GOOD.replace('hook_secrets = ["', 'hook_secret = ["').replace(
        "[routes.sales]", "[routes.sales]\nmirror_draft = true"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    assert (
        "sources.hostfact.hook_secret: is not a setting; did you mean sources.hostfact.hook_secrets?"
        in message
    )
    assert "routes.sales.mirror_draft: is not a setting; did you mean routes.sales.mirror_drafts?" in message


def test_an_error_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTSYNC_TARGETS__WEFACT__API_URL", "not a url")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, GOOD))
    assert "FACTSYNC_TARGETS__WEFACT__API_URL (environment, targets.wefact.api_url):" in str(caught.value)


def test_a_relative_data_dir_is_the_config_files_not_the_working_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    settings = load_settings(write(folder, 'data_dir = "state"\n' + GOOD))
    assert settings.data_dir == folder / "state"
    monkeypatch.setenv("FACTSYNC_DATA_DIR", "from-env")
    assert load_settings(write(folder, GOOD)).data_dir == Path("from-env"), "the environment's is as given"


def test_a_list_or_table_from_the_environment_is_json_and_a_bad_one_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTSYNC_RETRY", '{"max_tries": 3}')
    monkeypatch.setenv("FACTSYNC_SOURCES__HOSTFACT__HOOK_SECRETS", f'["{HOOK_SECRET}", "{HOOK_SECRET}"]')
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.retry.max_tries == 3 and len(settings.sources["hostfact"].hook_secrets) == 2
    monkeypatch.setenv("FACTSYNC_SOURCES__HOSTFACT__HOOK_SECRETS", HOOK_SECRET)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, GOOD))
    message = str(caught.value)
    assert (
        "FACTSYNC_SOURCES__HOSTFACT__HOOK_SECRETS (environment, sources.hostfact.hook_secrets): must be a"
        in message
    )
    assert HOOK_SECRET not in message
    # The same in the file, where TOML has lists: the same words, naming the setting.
    monkeypatch.delenv("FACTSYNC_SOURCES__HOSTFACT__HOOK_SECRETS")
    with pytest.raises(ConfigError, match=r"  sources\.hostfact\.hook_secrets: must be a list or table"):
        load_settings(write(tmp_path, GOOD.replace(f'["{HOOK_SECRET}"]', f'"{HOOK_SECRET}"')))


def test_a_misspelt_variable_gets_a_did_you_mean_and_other_factsync_variables_are_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not settings: the config file's variable, the operator's name, hooks.php's own.
    for name in ("FACTSYNC_OPERATOR", "FACTSYNC_URL", "FACTSYNC_SPOOL_DIR"):
        monkeypatch.setenv(name, "x")
    assert load_settings(write(tmp_path, GOOD)).routes
    monkeypatch.setenv("FACTSYNC_TARGETS__WEFACT__APIKEY", "k")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, GOOD))
    assert (
        "FACTSYNC_TARGETS__WEFACT__APIKEY (environment, targets.wefact.apikey): is not a setting; "
        "did you mean targets.wefact.api_key?"
    ) in str(caught.value)


def test_two_variables_for_one_table_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTSYNC_RETRY", '{"max_tries": 3}')
    monkeypatch.setenv("FACTSYNC_RETRY__BASE_DELAY", "2")
    with pytest.raises(ConfigError, match=r"FACTSYNC_RETRY and FACTSYNC_RETRY__BASE_DELAY .* both set retry"):
        load_settings(write(tmp_path, GOOD))


def test_a_variable_adds_to_the_files_table_and_wins_over_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTSYNC_TARGETS__WEFACT__RATE_LIMIT_PER_MINUTE", "90")
    monkeypatch.setenv("FACTSYNC_ROUTES__SALES__DRY_RUN", "true")
    settings = load_settings(write(tmp_path, GOOD))
    target = settings.targets["wefact"]
    assert target.rate_limit_per_minute == 90 and target.api_key is not None, "the file's key stays"
    assert settings.routes["sales"].dry_run is True and settings.routes["sales"].target == "wefact"
