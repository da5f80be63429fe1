"""Config loading: every error named by its key, all of them listed, and `kamigate config check`.

API.md: one TOML file; `kamigate.example.toml` documents every key; unknown keys are errors that
name the key; `kamigate config check FILE` validates offline and exits 1 with every error listed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import msgspec
import pytest

from engine import config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "kamigate.example.toml"
HEX_A = config.sha256_hex("key-a")
HEX_B = config.sha256_hex("key-b")
HEX_OPS = config.sha256_hex("key-ops")

BASE = f"""
[redis]
url = "redis://127.0.0.1:6379/0"

[[storefronts]]
id = "shop-a"
key_sha256 = "{HEX_A}"

[[storefronts]]
id = "shop-b"
key_sha256 = "{HEX_B}"

[[admins]]
id = "ops"
role = "operator"
key_sha256 = "{HEX_OPS}"

[[skus]]
id = "card-100"

[[skus]]
id = "card-200"
max_qty = 5
"""


def errors_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    """The errors of a config text ([] when it loads)."""
    try:
        config.parse_toml(text, environ or {})
    except config.ConfigError as exc:
        assert exc.errors, "a ConfigError must list its errors"
        assert str(exc) == "; ".join(exc.errors)
        return exc.errors
    return []


MISSING = re.compile(r"^(.*): Object missing required field `(.+)`$")


def keys_of(errors: list[str]) -> list[str]:
    """The key each error names (the part before ': '; a missing key is named in the message)."""
    named = []
    for error in errors:
        missing = MISSING.match(error)
        if missing:
            error = f"{missing.group(1)}.{missing.group(2)}: required"
        key, sep, message = error.partition(": ")
        assert sep and key and message, f"error without a key or a message: {error!r}"
        named.append(key)
    return named


def test_base_config_is_valid() -> None:
    assert errors_of(BASE) == []
    settings = config.parse_toml(BASE, {})
    assert [s.id for s in settings.skus] == ["card-100", "card-200"]
    assert settings.skus[1].max_qty == 5 and settings.skus[0].max_qty == 10


# -- the example file ----------------------------------------------------------------------------
def _example() -> Path:
    assert EXAMPLE.exists(), "kamigate.example.toml belongs in the repository"
    return EXAMPLE


def test_example_config_validates() -> None:
    settings = config.load(_example(), environ={})
    assert settings.skus and settings.storefronts


def _example_blocks(text: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"^\s*(?:#\s*)?\[\[?\s*([A-Za-z_]+)[^\]]*\]\]?", line)
        if header:
            current = header.group(1)
            blocks.setdefault(current, "")
        elif current is not None:
            blocks[current] += line + "\n"
    return blocks


def test_example_config_documents_every_key() -> None:
    """API.md: kamigate.example.toml documents every key (set or in a comment; a section that
    is not on by default, like [[suppliers]], is wholly a comment)."""
    blocks = _example_blocks(_example().read_text(encoding="utf-8"))
    missing = []
    for section_field in msgspec.structs.fields(config.Settings):
        section = section_field.encode_name
        struct = section_field.type
        if typing.get_args(struct):  # tuple[Item, ...] or dict[str, Item]
            struct = next(a for a in typing.get_args(struct) if isinstance(a, type)
                          and issubclass(a, msgspec.Struct))
        if section not in blocks:
            missing.append(section)
            continue
        for f in msgspec.structs.fields(struct):
            if not re.search(rf"\b{re.escape(f.encode_name)}\b", blocks[section]):
                missing.append(f"{section}.{f.encode_name}")
    assert missing == []


# -- unknown keys --------------------------------------------------------------------------------
def test_unknown_top_level_key() -> None:
    assert errors_of("colour = 1\n" + BASE) == ["colour: unknown key"]


@pytest.mark.parametrize("section", ["server", "orders", "worker", "limits", "waiting_room",
                                     "maintenance"])
def test_unknown_key_in_a_section(section: str) -> None:
    assert errors_of(BASE + f"\n[{section}]\ncolour = 1\n") == [f"{section}.colour: unknown key"]


def test_unknown_key_in_redis_section() -> None:
    text = BASE.replace('url = "redis://127.0.0.1:6379/0"',
                        'url = "redis://127.0.0.1:6379/0"\ncolour = 1')
    assert errors_of(text) == ["redis.colour: unknown key"]


def test_unknown_key_in_array_items() -> None:
    assert errors_of(BASE + '\n[[skus]]\nid = "card-300"\ncolour = "red"\n') == [
        "skus[2].colour: unknown key"]
    text = BASE.replace('id = "shop-b"', 'id = "shop-b"\nsecret = "x"')
    assert errors_of(text) == ["storefronts[1].secret: unknown key"]
    text = BASE.replace('role = "operator"', 'role = "operator"\npassword = "x"')
    assert errors_of(text) == ["admins[0].password: unknown key"]
    text = BASE + '\n[[pauses]]\nscope = "global"\nstarts_at = "2030-01-01T00:00:00Z"\nwhy = "x"\n'
    assert errors_of(text) == ["pauses[0].why: unknown key"]


def test_unknown_key_in_nested_tables() -> None:
    text = BASE + '\n[[skus]]\nid = "card-300"\nlimit = { rate = 1, burst = 2, colour = 3 }\n'
    assert errors_of(text) == ["skus[2].limit.colour: unknown key"]
    text = BASE + "\n[limits]\nglobal = { rate = 1, burst = 2, colour = 3 }\n"
    assert errors_of(text) == ["limits.global.colour: unknown key"]
    # the Python name of `global` is not a config key
    text = BASE + "\n[limits]\nglobal_ = { rate = 1, burst = 2 }\n"
    assert errors_of(text) == ["limits.global_: unknown key"]


def test_unknown_key_in_a_calendar_names_the_key() -> None:
    errors = errors_of(BASE + '\n[calendars.CN]\ncountry = "CN"\ncolour = 1\n')
    assert len(errors) == 1 and errors[0].endswith("colour: unknown key")


def test_unknown_key_in_a_calendar_names_the_calendar() -> None:
    errors = errors_of(BASE + '\n[calendars.CN]\ncountry = "CN"\ncolour = 1\n')
    assert errors == ["calendars.CN.colour: unknown key"]


# -- bad types and values ------------------------------------------------------------------------
BAD_VALUES: list[tuple[str, str]] = [
    ('[server]\nport = "8080"', "server.port"),
    ("[server]\nport = 70000", "server.port"),
    ("[server]\nport = -1", "server.port"),
    ("[server]\nmax_body_bytes = 10", "server.max_body_bytes"),
    ('[server]\npublic_url = "ftp://example.com"', "server.public_url"),
    ("[server]\nhost = 8080", "server.host"),
    ("[orders]\ndefault_wait_ms = 10001", "orders.default_wait_ms"),
    ("[orders]\nmax_hold_s = -1", "orders.max_hold_s"),
    ('[orders]\nmax_hold_s = "900"', "orders.max_hold_s"),
    ("[orders]\nmax_hold_s = 1.5", "orders.max_hold_s"),
    ("[worker]\nlease_s = 0.1", "worker.lease_s"),
    ("[worker]\nbatch_size = 0", "worker.batch_size"),
    ("[limits]\nper_buyer = { rate = 0, burst = 5 }", "limits.per_buyer.rate"),
    ("[limits]\nper_ip = { rate = 1, burst = 0 }", "limits.per_ip.burst"),
    ("[limits]\nper_ip = { rate = 1 }", "limits.per_ip"),
    ("[limits]\nper_ip = 5", "limits.per_ip"),
    ('[waiting_room]\nenabled = "yes"', "waiting_room.enabled"),
    ("[waiting_room]\ncapacity = -5", "waiting_room.capacity"),
    ('[maintenance]\nmode = "half"', "maintenance.mode"),
    ("[maintenance]\nnotice_lead_s = -1", "maintenance.notice_lead_s"),
    ('[[skus]]\nid = "card-300"\nmax_qty = 0', "skus[2].max_qty"),
    ('[[skus]]\nid = "card-300"\nmax_qty = 1001', "skus[2].max_qty"),
    ('[[skus]]\nid = "card-300"\non_sold_out = "maybe"', "skus[2].on_sold_out"),
    ('[[skus]]\nid = "card-300"\nqueue_ttl_s = 0', "skus[2].queue_ttl_s"),
    ('[[skus]]\nid = "card-300"\nbuyer_limit = -1', "skus[2].buyer_limit"),
    ('[[skus]]\nid = "-card"', "skus[2].id"),
    ('[[skus]]\nid = "card 300"', "skus[2].id"),
    ("[[skus]]\nid = 300", "skus[2].id"),
    ("[[skus]]\nmax_qty = 3", "skus[2].id"),
    ('[[storefronts]]\nid = "shop-c"\nkey_sha256 = "abc"', "storefronts[2].key_sha256"),
    (f'[[storefronts]]\nid = "shop-c"\nkey_sha256 = "{HEX_A.upper()}"',
     "storefronts[2].key_sha256"),
    (f'[[storefronts]]\nid = "shop c"\nkey_sha256 = "{"0" * 64}"', "storefronts[2].id"),
    (f'[[admins]]\nid = "root"\nrole = "root"\nkey_sha256 = "{"1" * 64}"', "admins[1].role"),
    ('[[admins]]\nid = "root"\nrole = "admin"', "admins[1].key_sha256"),
    ('[[pauses]]\nscope = "global"', "pauses[0]"),
    ('[[pauses]]\nscope = "global"\ncalendar = "XX"', "pauses[0].calendar"),
    ('[calendars.CN]\ncountry = "C"', "calendars"),
    (f'[[storefronts]]\nid = "shop-c"\nkey_sha256 = "{"2" * 64}"\nevents_url = "ftp://x"',
     "storefronts[2].events_url"),
    ('[compensation]\ncoupon_template = "new-user-5"', "compensation.coupon_template"),
    ("[compensation]\ndelay_over_s = 60\npoints = 100", "compensation.points"),
    ("[compensation]\npoints = -1", "compensation.points"),
    ("[waiting_room]\ndelay_notice_s = -1", "waiting_room.delay_notice_s"),
]


@pytest.mark.parametrize(("chunk", "key"), BAD_VALUES)
def test_bad_value_names_the_key(chunk: str, key: str) -> None:
    errors = errors_of(BASE + "\n" + chunk + "\n")
    named = keys_of(errors)
    assert any(k == key or k.startswith(key) for k in named), errors


def test_bad_redis_url_names_the_key() -> None:
    text = BASE.replace("redis://127.0.0.1:6379/0", "http://127.0.0.1:6379")
    assert keys_of(errors_of(text)) == ["redis.url"]


@pytest.mark.parametrize("section", ["storefronts", "admins", "skus", "pauses"])
def test_list_sections_must_be_arrays_of_tables(section: str) -> None:
    assert errors_of(f"{section} = 1\n") == [
        f"{section}: expected an array of tables ([[{section}]])"]


def test_sections_must_be_tables() -> None:
    assert keys_of(errors_of("server = 1\n")) == ["server"]
    assert keys_of(errors_of("calendars = 1\n")) == ["calendars"]


# -- every error at once -------------------------------------------------------------------------
def test_errors_in_different_places_are_all_listed() -> None:
    text = ("colour = 1\n" + BASE + "\n[server]\nport = 70000\n[orders]\nmax_hold_s = -1\n"
            '[[skus]]\nid = "card-300"\non_sold_out = "maybe"\n'
            '[[skus]]\nid = "card-400"\nsize = 1\n')
    assert sorted(keys_of(errors_of(text))) == sorted([
        "colour", "server.port", "orders.max_hold_s", "skus[2].on_sold_out", "skus[3].size"])


def test_semantic_errors_are_all_listed() -> None:
    text = (BASE.replace("redis://127.0.0.1:6379/0", "http://x")
            + '\n[server]\npublic_url = "ftp://x"\n'
            + '[[skus]]\nid = "card-100"\n'
            + '[[pauses]]\nscope = "planet:mars"\nstarts_at = "2030-01-01T00:00:00Z"\n'
            + '[[pauses]]\nscope = "global"\ncalendar = "XX"\n')
    assert sorted(keys_of(errors_of(text))) == sorted([
        "redis.url", "server.public_url", "skus[2].id", "pauses[0].scope", "pauses[1].calendar"])


def test_two_errors_in_one_section_are_both_listed() -> None:
    text = BASE + '\n[server]\nport = "x"\nhost = 5\n[[skus]]\nid = "card-300"\nmax_qty = 0\n' \
        'on_sold_out = "maybe"\n'
    assert sorted(keys_of(errors_of(text))) == sorted([
        "server.port", "server.host", "skus[2].max_qty", "skus[2].on_sold_out"])


def test_type_errors_and_semantic_errors_are_listed_together() -> None:
    text = BASE + '\n[server]\nport = 70000\n[[skus]]\nid = "card-100"\n'
    assert sorted(keys_of(errors_of(text))) == ["server.port", "skus[2].id"]


# -- duplicates, scopes, env ---------------------------------------------------------------------
def test_duplicate_sku_ids() -> None:
    errors = errors_of(BASE + '\n[[skus]]\nid = "card-200"\n')
    assert errors == ["skus[2].id: duplicate id 'card-200'"]


def test_duplicate_storefront_and_admin_ids() -> None:
    text = BASE + f'\n[[storefronts]]\nid = "shop-a"\nkey_sha256 = "{"2" * 64}"\n' \
        f'[[admins]]\nid = "ops"\nrole = "viewer"\nkey_sha256 = "{"3" * 64}"\n'
    assert sorted(errors_of(text)) == sorted([
        "storefronts[2].id: duplicate id 'shop-a'", "admins[1].id: duplicate id 'ops'"])


def test_one_key_may_not_serve_two_principals() -> None:
    text = BASE + f'\n[[admins]]\nid = "root"\nrole = "admin"\nkey_sha256 = "{HEX_A}"\n'
    errors = errors_of(text)
    assert len(errors) == 1 and "key_sha256" in keys_of(errors)[0]


@pytest.mark.parametrize("scope", ["planet:mars", "sku:no-such-sku", "storefront:no-such-shop",
                                   "", "Global", "sku:", "storefront", "sku:card-100:x"])
def test_bad_pause_scope(scope: str) -> None:
    text = BASE + f'\n[[pauses]]\nscope = "{scope}"\nstarts_at = "2030-01-01T00:00:00Z"\n'
    errors = errors_of(text)
    assert keys_of(errors) == ["pauses[0].scope"], errors
    assert repr(scope) in errors[0]


@pytest.mark.parametrize("scope", ["global", "sku:card-200", "storefront:shop-b"])
def test_good_pause_scopes(scope: str) -> None:
    text = BASE + f'\n[[pauses]]\nscope = "{scope}"\nstarts_at = "2030-01-01T00:00:00Z"\n'
    assert errors_of(text) == []


def test_env_secret_missing() -> None:
    text = BASE.replace('id = "shop-b"', 'id = "shop-b"\nwebhook_secret = "env:KG_TEST_HOOK"')
    assert errors_of(text, {}) == [
        "storefronts[1].webhook_secret: environment variable KG_TEST_HOOK is not set"]
    settings = config.parse_toml(text, {"KG_TEST_HOOK": "s3cret" * 6})
    assert settings.storefronts[1].webhook_secret == "s3cret" * 6
    text = BASE + '\n[server]\npage_secret = "env:KG_TEST_PAGE"\n'
    assert errors_of(text, {}) == [
        "server.page_secret: environment variable KG_TEST_PAGE is not set"]


def test_two_missing_env_secrets_are_both_listed() -> None:
    text = BASE.replace('id = "shop-a"', 'id = "shop-a"\nwebhook_secret = "env:KG_A"') \
        .replace('id = "shop-b"', 'id = "shop-b"\nwebhook_secret = "env:KG_B"')
    assert keys_of(errors_of(text, {})) == ["storefronts[0].webhook_secret",
                                            "storefronts[1].webhook_secret"]


@pytest.mark.parametrize("chunk", [
    f'[[storefronts]]\nid = "shop-c"\nkey_sha256 = "{"4" * 64}\\n"',
    f'[[storefronts]]\nid = "shop-c\\n"\nkey_sha256 = "{"4" * 64}"',
    '[[skus]]\nid = "card-300\\n"',
])
def test_trailing_newline_in_ids_and_hashes_is_an_error(chunk: str) -> None:
    assert errors_of(BASE + "\n" + chunk + "\n") != []


# -- broken files --------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "[server\nport = 1\n",
    "[server]\nport = \n",
    "[server]\nport = 1\nport = 2\n",
    '[[skus]]\nid = "a"\n[skus]\nid = "b"\n',
    "key = 'unterminated\n",
    "= 1\n",
])
def test_broken_toml_syntax(text: str) -> None:
    errors = errors_of(text)
    assert len(errors) == 1 and errors[0].startswith("(toml): "), errors


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as exc:
        config.load(tmp_path / "missing.toml", environ={})
    assert exc.value.errors[0].startswith("(file): ")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    with pytest.raises(config.ConfigError) as exc:
        config.load(bad, environ={})
    assert exc.value.errors[0].startswith("(file): ")


# -- kamigate config check -----------------------------------------------------------------------
def check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KG_TEST_") and k != "KAMIGATE_CONFIG"}
    return subprocess.run([sys.executable, "-m", "engine", "config", "check", *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


def test_config_check_good_file(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(BASE)
    result = check(str(good))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "2 SKUs" in result.stdout


def test_config_check_example_file() -> None:
    result = check(str(_example()))
    assert result.returncode == 0, result.stderr


def test_config_check_bad_file_lists_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 1\n" + BASE + "\n[server]\nport = 70000\n[orders]\nmax_hold_s = -1\n"
                   '[[skus]]\nid = "card-300"\non_sold_out = "maybe"\n')
    result = check(str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    listed = [line.strip()[2:] for line in result.stderr.splitlines()
              if line.strip().startswith("- ")]
    assert sorted(keys_of(listed)) == sorted(
        ["colour", "orders.max_hold_s", "server.port", "skus[2].on_sold_out"]), result.stderr
    assert str(bad) in result.stderr


def test_config_check_semantic_errors_and_env(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace('id = "shop-b"', 'id = "shop-b"\nwebhook_secret = "env:KG_TEST_X"')
                   + '\n[[skus]]\nid = "card-100"\n')
    result = check(str(bad))
    assert result.returncode == 1
    assert "storefronts[1].webhook_secret: environment variable KG_TEST_X is not set" \
        in result.stderr
    assert "skus[2].id: duplicate id 'card-100'" in result.stderr


def test_config_check_broken_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    result = check(str(broken))
    assert result.returncode == 1 and "(toml)" in result.stderr
    assert "Traceback" not in result.stderr
    result = check(str(tmp_path / "missing.toml"))
    assert result.returncode == 1 and "(file)" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_sha256_survives_a_round_trip() -> None:
    """GET /admin/config, PUT it back: the same settings, the same sha256 (no default whose
    type changes on the way, e.g. an int default of a float field)."""
    import msgspec

    from engine.config import Settings, from_mapping
    from tests.conftest import settings_dict

    for settings in (Settings(), from_mapping(settings_dict(), environ={})):
        again = from_mapping(msgspec.json.decode(msgspec.json.encode(settings)), environ={})
        assert again.digest() == settings.digest()
