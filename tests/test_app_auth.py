"""Who may see the app: loopback by default, Streamlit's sign-in (OIDC) with an allow-list when
configured, a warning when served to the network without it (ui/auth.py)."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from app_seed import APP, XSS_THREAD, app_url, first_run, go_to, seeded_folder, seeded_url, streamlit_running, texts
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from ui import auth
from ui.auth import Access, decide, is_loopback, parse_allowed

__all__ = ["app_url", "seeded_folder"]  # fixtures used by the tests below

ROOT = Path(APP).parent

# What `.streamlit/secrets.toml` holds for one OIDC provider (values made up: nothing here is
# contacted, AppTest never follows the sign-in redirect).
AUTH_SECRETS = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "a-test-cookie-secret-of-some-length",
        "client_id": "test-client",
        "client_secret": "test-secret",
        "server_metadata_url": "https://accounts.example.com/.well-known/openid-configuration",
    }
}
ALICE = {"is_logged_in": True, "email": "Alice@Example.com", "email_verified": True, "name": "Alice"}
MALLORY = {"is_logged_in": True, "email": "mallory@elsewhere.test", "email_verified": True, "name": "Mallory"}


def run_app(
    *,
    secrets: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    address: str = "127.0.0.1",
    page: str | None = None,
    **query: str,
) -> AppTest:
    """The app as a visitor ``user`` sees it, served on ``address``, with ``secrets``; on
    ``views/<page>.py`` with ``query`` when given (as ``app_seed.open_page``)."""
    at = AppTest.from_file(APP, default_timeout=60)
    if secrets:
        at.secrets.update(secrets)
    if user is not None:
        at.user = user
    at.query_params.update(query)
    with patch_config_options({"server.address": address}):
        first_run(at)
        if page:
            go_to(at, page, query)
    assert not at.exception, at.exception
    return at


def shows_history(at: AppTest) -> bool:
    """Whether any of the store's content is on the page."""
    return bool(at.metric or at.dataframe or at.chat_message or at.get("plotly_chart")) or "zebracorn" in texts(at)


def button_labels(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


# -- the decision, on its own ---------------------------------------------------------------------


def test_without_sign_in_configured_everyone_who_reaches_the_port_is_in() -> None:
    assert decide(auth_configured=False, user={}, allowed=frozenset()) is Access.OPEN


@pytest.mark.parametrize("user", [{}, {"email": "alice@example.com"}, {"is_logged_in": False}, {"is_logged_in": "yes"}])
def test_with_sign_in_configured_a_visitor_not_signed_in_must_sign_in(user: dict[str, Any]) -> None:
    assert decide(auth_configured=True, user=user, allowed=parse_allowed("*")) is Access.SIGN_IN


@pytest.mark.parametrize(
    ("allowed", "user", "expected"),
    [
        ("alice@example.com", ALICE, Access.ALLOWED),  # case does not matter
        (" bob@example.com ; ALICE@example.com ", ALICE, Access.ALLOWED),
        ("@example.com", ALICE, Access.ALLOWED),  # a whole domain
        ("*", MALLORY, Access.ALLOWED),  # everyone the provider signs in, chosen explicitly
        ("*", {"is_logged_in": True}, Access.ALLOWED),
        ("alice@example.com", MALLORY, Access.REFUSED),
        ("@example.com", MALLORY, Access.REFUSED),
        ("@example.com", {**MALLORY, "email": "mallory@evil-example.com"}, Access.REFUSED),
        ("", ALICE, Access.REFUSED),  # no list: nobody, not everybody
        ("alice@example.com", {**ALICE, "email_verified": False}, Access.REFUSED),
        ("alice@example.com", {"is_logged_in": True, "name": "Alice"}, Access.REFUSED),  # no email claim
    ],
)
def test_a_signed_in_visitor_is_let_in_only_when_listed(allowed: str, user: dict[str, Any], expected: Access) -> None:
    assert decide(auth_configured=True, user=user, allowed=parse_allowed(allowed)) is expected


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("unix:///run/app.sock", True),
        ("", False),  # unset: Streamlit listens on every interface
        (None, False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("myhost.lan", False),
    ],
)
def test_which_server_addresses_serve_this_computer_only(address: str | None, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_the_app_is_served_on_loopback_by_default() -> None:
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    address = settings["server"]["address"]
    assert ipaddress.ip_address(address).is_loopback
    # Secrets (the OIDC client secret, the cookie secret) never ship with the app.
    assert not (ROOT / ".streamlit" / "secrets.toml").exists() or "secrets.toml" in (ROOT / ".gitignore").read_text()


# -- the app, through AppTest ---------------------------------------------------------------------


def test_without_sign_in_the_pages_draw_as_before(app_url: str) -> None:
    at = run_app()
    assert at.title[0].value == "Overview"
    assert shows_history(at)
    assert not any("Sign" in label for label in button_labels(at))
    assert not any("without sign-in" in w.value for w in at.warning)


@pytest.mark.parametrize(("address", "where"), [("0.0.0.0", "on `0.0.0.0`"), ("", "on every network interface")])
def test_served_to_the_network_without_sign_in_every_page_says_so(app_url: str, address: str, where: str) -> None:
    for page in (None, "thread"):
        at = run_app(address=address, page=page, thread=XSS_THREAD)
        banner = [w.value for w in at.warning if "without sign-in" in w.value]
        assert len(banner) == 1 and where in banner[0], banner
        assert shows_history(at)  # a warning, not a lock: the operator chose the address


@pytest.mark.parametrize("user", [{"email": "alice@example.com"}, {"is_logged_in": False}])
def test_with_sign_in_configured_nothing_draws_before_sign_in(
    app_url: str, monkeypatch: pytest.MonkeyPatch, user: dict[str, Any]
) -> None:
    monkeypatch.setenv(auth.ALLOWED_EMAILS_VAR, "*")
    for page in (None, "thread", "threads", "search"):
        at = run_app(secrets=AUTH_SECRETS, user=user, page=page, thread=XSS_THREAD, q="zebracorn")
        assert not shows_history(at), page
        assert [t.value for t in at.title] == ["MCP history"]
        assert button_labels(at) == ["Sign in"]
        # Not even which store: the sidebar (store caption, Refresh) is not drawn either.
        assert not at.sidebar.caption and "Refresh" not in button_labels(at)


def test_a_named_provider_gets_its_own_sign_in_button(app_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.ALLOWED_EMAILS_VAR, "*")
    base = {k: v for k, v in AUTH_SECRETS["auth"].items() if k in ("redirect_uri", "cookie_secret")}
    provider = {k: v for k, v in AUTH_SECRETS["auth"].items() if k not in base}
    at = run_app(secrets={"auth": {**base, "microsoft": provider}}, user={})
    assert button_labels(at) == ["Sign in with Microsoft"]
    assert not shows_history(at)


def test_a_signed_in_listed_visitor_sees_the_history(app_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.ALLOWED_EMAILS_VAR, "bob@example.com, alice@example.com")
    at = run_app(secrets=AUTH_SECRETS, user=ALICE)
    assert at.title[0].value == "Overview"
    assert shows_history(at)
    assert any("Signed in as Alice@Example\\.com" in c.value for c in at.sidebar.caption)
    assert "Sign out" in [b.label for b in at.sidebar.button]

    at = run_app(secrets=AUTH_SECRETS, user=ALICE, page="thread", thread=XSS_THREAD)
    assert "zebracorn" in texts(at)


def test_signing_out_leaves_the_history(app_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.ALLOWED_EMAILS_VAR, "alice@example.com")
    at = run_app(secrets=AUTH_SECRETS, user=ALICE)
    at.button(key="auth_logout").click().run()
    assert not at.exception, at.exception
    assert at.user.get("is_logged_in") is False
    assert not shows_history(at)  # the run that signs out draws no page
    at.run()
    assert not at.exception, at.exception
    assert not shows_history(at)
    assert button_labels(at) == ["Sign in"]


def test_a_signed_in_visitor_not_listed_is_refused(app_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.ALLOWED_EMAILS_VAR, "alice@example.com")
    for page in (None, "thread"):
        at = run_app(secrets=AUTH_SECRETS, user=MALLORY, page=page, thread=XSS_THREAD)
        assert not shows_history(at), page
        refusal = " ".join(e.value for e in at.error)
        assert "mallory@elsewhere\\.test" in refusal and "may not see this history" in refusal
        assert button_labels(at) == ["Sign out"]


def test_with_no_allow_list_nobody_is_let_in(app_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(auth.ALLOWED_EMAILS_VAR, raising=False)
    at = run_app(secrets=AUTH_SECRETS, user=ALICE)
    assert not shows_history(at)
    assert auth.ALLOWED_EMAILS_VAR in " ".join(e.value for e in at.error)


def test_with_sign_in_configured_a_network_address_needs_no_warning(
    app_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(auth.ALLOWED_EMAILS_VAR, "alice@example.com")
    at = run_app(secrets=AUTH_SECRETS, user=ALICE, address="0.0.0.0")
    assert shows_history(at)
    assert not any("without sign-in" in w.value for w in at.warning)


def test_a_secrets_file_that_cannot_be_read_keeps_the_app_closed(app_url: str, tmp_path: Path) -> None:
    broken = tmp_path / "secrets.toml"
    broken.write_text('[auth]\nredirect_uri = "http://localhost:8501/oauth2callback\n', encoding="utf-8")
    at = AppTest.from_file(APP, default_timeout=60)
    with patch_config_options({"secrets.files": [str(broken)], "server.address": "127.0.0.1"}):
        first_run(at)
    assert [t.value for t in at.title] == ["Cannot read the secrets"]
    assert not shows_history(at)


# -- the app as `streamlit run` serves it ---------------------------------------------------------


def _listening(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The local addresses with a socket listening on ``port`` (Linux: /proc/net/tcp, tcp6)."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table, encoding="ascii") as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                host, _, port_hex = local.partition(":")
                if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(host)  # kernel order: each 32-bit word little-endian
                packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(ipaddress.ip_address(packed))
    return found


def _outward_address() -> str | None:
    """An address of this computer other than loopback (no packet is sent), if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = str(s.getsockname()[0])
    except OSError:
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


@pytest.fixture
def served(tmp_path: Path) -> Iterator[int]:
    """`streamlit run <checkout>/app.py` with no address given, started from another folder
    (the settings beside app.py apply wherever it is started from); yields its port."""
    url = seeded_url(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERSISTENCE_", "SUPABASE_", "STREAMLIT_"))}
    env.update(PERSISTENCE_URL=url, PERSISTENCE_HOME=str(tmp_path / "home"))
    with streamlit_running(env, tmp_path / "streamlit.log", cwd=tmp_path) as port:
        yield port


@pytest.mark.slow
def test_streamlit_run_listens_on_loopback_only(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served), timeout=5):
        pass
    if sys.platform.startswith("linux"):
        listening = _listening(served)
        assert listening, "no listening socket found for the app's port"
        assert all(a.is_loopback for a in listening), listening
    outward = _outward_address()
    if outward:
        with pytest.raises(OSError), socket.create_connection((outward, served), timeout=5):
            pass
