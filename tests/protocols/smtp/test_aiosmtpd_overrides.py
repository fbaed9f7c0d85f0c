"""TwinSMTP overrides some of aiosmtpd's private methods (pyproject pins aiosmtpd<2).

A release that renamed one, or changed its parameters, would leave the
override dead code and the twin's bound, timeout or parsing silently gone:
this test names each override and checks aiosmtpd still has it, the same way.
"""

from __future__ import annotations

import inspect

import pytest
from aiosmtpd.smtp import SMTP

from protocols.smtp.session import TwinSMTP

# name -> why the twin overrides it
OVERRIDDEN = {
    "_reset_timeout": "one armed timer, and a short deadline before AUTH on submission",
    "_timeout_cb": "421 to the client before an idle session is closed",
    "_getaddr": "a fast path for plain addresses, aiosmtpd's parsing for the rest",
    "smtp_DATA": "DATA read with the twin's size bound, before buffering",
    "smtp_STARTTLS": "the loop's TLS (uvloop's C) instead of asyncio.sslproto",
}


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_each_override_still_overrides_an_aiosmtpd_method(name: str) -> None:
    ours, theirs = TwinSMTP.__dict__.get(name), getattr(SMTP, name, None)
    assert ours is not None, f"TwinSMTP no longer defines {name}: update this list"
    assert theirs is not None, f"aiosmtpd no longer has SMTP.{name}: the override is dead"
    assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs)
    assert list(inspect.signature(ours).parameters) == list(
        inspect.signature(theirs).parameters), name


# aiosmtpd's own helpers the overrides call (methods; its attributes such as
# _timeout_duration, _writer and _reader are set in __init__ and checked below)
CALLED = ["_call_handler_hook", "_create_session", "_set_post_data_state",
          "_set_rset_state", "check_auth_needed", "check_helo_needed"]


@pytest.mark.parametrize("name", CALLED)
def test_each_aiosmtpd_helper_the_overrides_call_still_exists(name: str) -> None:
    assert callable(getattr(SMTP, name, None)), f"aiosmtpd no longer has SMTP.{name}"


def test_the_attributes_the_overrides_read_are_still_set_by_aiosmtpd() -> None:
    source = inspect.getsource(SMTP.__init__) + inspect.getsource(SMTP.connection_made)
    for attr in ("_timeout_duration", "_timeout_handle", "_tls_protocol", "_reader",
                 "_writer", "_handle_hooks", "_tls_handshake_okay"):
        assert f"self.{attr}" in source, f"aiosmtpd no longer sets {attr}"


@pytest.mark.parametrize("name", ["smtp_EHLO", "smtp_AUTH", "_handle_client"])
def test_aiosmtpd_still_takes_tls_protocol_for_tls_is_on(name: str) -> None:
    """The twin's STARTTLS sets ``_tls_protocol`` to the loop's TLS transport;
    aiosmtpd must still read it as a flag only (STARTTLS and AUTH in EHLO,
    AUTH's encryption check, require_starttls)."""
    source = inspect.getsource(getattr(SMTP, name))
    assert "self._tls_protocol" in source
    assert "self._tls_protocol." not in source and "self._tls_protocol._" not in source
