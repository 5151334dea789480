"""Who may see the history.

The app shows every thread of its store, so it is served to this computer only unless told
otherwise (``[server] address`` in ``.streamlit/config.toml``). To serve others, configure
Streamlit's own sign-in (OIDC: an ``[auth]`` section in ``.streamlit/secrets.toml``) and list
who may come in, in ``PERSISTENCE_APP_ALLOWED_EMAILS``. Then no page draws before the visitor
has signed in with an allowed address. Served to the network with no sign-in, every page
carries a warning.

The decision itself is :func:`decide` (pure, tested on its own); :func:`gate` draws what a
visitor who may not come in sees and stops the run.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from enum import Enum
from typing import Any

import streamlit as st
from streamlit import config
from streamlit.errors import StreamlitAuthError

from persistence.env import load_env

from .safe import escape_markdown, inline_code

__all__ = [
    "ALLOWED_EMAILS_VAR",
    "Access",
    "admitted",
    "auth_configured",
    "decide",
    "gate",
    "is_loopback",
    "parse_allowed",
    "sidebar",
    "warn_if_exposed",
]

ALLOWED_EMAILS_VAR = "PERSISTENCE_APP_ALLOWED_EMAILS"
EVERYONE = "*"


class Access(Enum):
    OPEN = "open"  # no sign-in configured: whoever reaches the port (loopback by default)
    SIGN_IN = "sign_in"  # sign-in configured, visitor not signed in
    REFUSED = "refused"  # signed in, but not on the allow-list
    ALLOWED = "allowed"  # signed in and on the allow-list


def parse_allowed(text: str | None) -> frozenset[str]:
    """The allow-list: exact addresses, ``@domain`` for a whole domain, ``*`` for everyone the
    identity provider signs in. Case does not matter; blank entries are ignored."""
    return frozenset(e.strip().casefold() for e in (text or "").replace(";", ",").split(",") if e.strip())


def decide(*, auth_configured: bool, user: Mapping[str, Any], allowed: frozenset[str]) -> Access:
    """What the visitor ``user`` (``st.user``) may see.

    Fails closed: with sign-in configured, a visitor is let in only when signed in and listed,
    and an empty allow-list lets nobody in (the usual providers, Google or GitHub, sign in
    anyone with an account; ``*`` is the explicit choice to accept them all). An address the
    provider says is not verified does not match the list.
    """
    if not auth_configured:
        return Access.OPEN
    if user.get("is_logged_in") is not True:
        return Access.SIGN_IN
    if EVERYONE in allowed:
        return Access.ALLOWED
    email = user.get("email")
    if not isinstance(email, str) or "@" not in email or user.get("email_verified") is False:
        return Access.REFUSED
    email = email.strip().casefold()
    domain = "@" + email.rpartition("@")[2]
    return Access.ALLOWED if email in allowed or domain in allowed else Access.REFUSED


def is_loopback(address: str | None) -> bool:
    """Whether Streamlit's ``server.address`` serves this computer only. Unset means every
    interface; a host name other than localhost may be reachable from elsewhere."""
    if not address:
        return False
    address = address.strip().strip("[]")
    if address == "localhost" or address.startswith("unix://"):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _auth_section() -> Mapping[str, Any]:
    """The ``[auth]`` section of the secrets, empty when there is none. A secrets file that
    exists but cannot be read stops the run: sign-in may be meant, so never fall back to open."""
    if not st.secrets.load_if_toml_exists():
        present = [p for p in config.get_option("secrets.files") or () if os.path.exists(p)]
        if present:
            st.title("Cannot read the secrets")
            st.error(
                "A secrets file exists but could not be read, so whether sign-in is required is unknown. "
                "Check its TOML syntax (the server console has the error).",
                icon=":material/error:",
            )
            st.stop()
        return {}
    section = st.secrets.get("auth")
    return section if isinstance(section, Mapping) else {}


def auth_configured() -> bool:
    """Streamlit's sign-in is configured (the same test Streamlit uses to give ``st.user`` its
    ``is_logged_in``)."""
    return bool(_auth_section())


def _access() -> Access:
    return decide(
        auth_configured=auth_configured(),
        user=st.user.to_dict(),
        allowed=parse_allowed(load_env().get(ALLOWED_EMAILS_VAR)),
    )


def admitted() -> bool:
    """Whether the visitor may see the pages (app.py hides the navigation otherwise)."""
    return _access() in (Access.OPEN, Access.ALLOWED)


def _providers(section: Mapping[str, Any]) -> list[str | None]:
    """The providers to offer: ``None`` for the default one (``client_id`` directly in
    ``[auth]``), then every named ``[auth.<name>]``."""
    named = [k for k, v in section.items() if isinstance(v, Mapping) and k != "client_kwargs"]
    return ([None] if "client_id" in section else []) + named


def _sign_in_button(provider: str | None, key: str) -> None:
    label = "Sign in" if provider is None else f"Sign in with {provider.replace('-', ' ').title()}"
    if st.button(label, key=key, type="primary", icon=":material/login:"):
        try:
            st.login(provider)  # None is Streamlit's default provider
        except StreamlitAuthError as exc:  # incomplete [auth], or Authlib missing: say so, stay closed
            st.error(f"Sign-in is not set up correctly: {exc}", icon=":material/error:")


def gate() -> None:
    """Let the visitor through, or draw the sign-in or the refusal and stop the run."""
    access = _access()
    if access in (Access.OPEN, Access.ALLOWED):
        return
    st.title("MCP history")
    if access is Access.SIGN_IN:
        st.write("Sign in to see the conversation history.")
        providers = _providers(_auth_section()) or [None]
        for i, provider in enumerate(providers):
            _sign_in_button(provider, key=f"auth_login_{i}")
    else:
        email = st.user.to_dict().get("email")
        who = f"as {escape_markdown(str(email))}" if email else "without an email address"
        allowed = parse_allowed(load_env().get(ALLOWED_EMAILS_VAR))
        why = (
            f"nobody is let in yet: the operator lists who may come in in `{ALLOWED_EMAILS_VAR}`."
            if not allowed
            else "that account may not see this history."
        )
        st.error(f"You are signed in {who}, but {why}", icon=":material/block:")
        if st.button("Sign out", key="auth_logout_refused", icon=":material/logout:"):
            st.logout()
    st.stop()


def sidebar() -> None:
    """Who is signed in, and the way out (in the sidebar, under the store)."""
    if _access() is not Access.ALLOWED:
        return
    email = st.user.to_dict().get("email")
    if email:
        st.caption(f"Signed in as {escape_markdown(str(email))}")
    if st.button("Sign out", key="auth_logout", icon=":material/logout:"):
        st.logout()
        # Not st.rerun: a rerun may drop the queued redirect to the provider's logout. Stopping
        # here draws no page for the rest of this run; the browser leaves for the logout.
        st.stop()


def warn_if_exposed() -> None:
    """A banner on every page when the history is served to the network with no sign-in."""
    address = config.get_option("server.address")
    if is_loopback(address) or auth_configured():
        return
    where = f"on {inline_code(address)}" if address else "on every network interface"
    st.warning(
        f"**This history is served {where} without sign-in:** anyone who can reach this port reads every "
        "thread. Serve it on 127.0.0.1 (the default in `.streamlit/config.toml`), or configure sign-in "
        "(README, App).",
        icon=":material/public:",
    )
