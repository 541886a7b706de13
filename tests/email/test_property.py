"""Property: whatever bytes arrive, the parser never raises and the raw
envelope is always stored (and processed or ignored, never lost)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels_app.adapters import get_adapter
from channels_app.models import EnvelopeStatus, InboundEnvelope
from channels_app.services import envelope_process, envelope_store

from .conftest import load

HEADER_NAMES = [b"From", b"To", b"Subject", b"Message-ID", b"In-Reply-To", b"References", b"Content-Type",
                b"Content-Transfer-Encoding", b"Content-Disposition", b"Auto-Submitted", b"Date", b"MIME-Version"]
VALUES = [b"text/plain; charset=x-bogus", b"multipart/mixed; boundary=b", b"multipart/report", b"base64",
          b"quoted-printable", b"<a@b>", b"=?utf-8?B?////?=", b"=?gb2312?Q?=FF=FE?=", b"kim@example.org",
          b"\"Broken <x@y", b"attachment; filename*=utf-8''%FF%FE", b"Fri, 31 Feb 99999 25:61:61 +9999"]

mail_like = st.builds(
    lambda headers, body, parts: b"\r\n".join(n + b": " + v for n, v in headers) + b"\r\n\r\n" + body
    + b"".join(b"\r\n--b\r\n" + p for p in parts),
    st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.one_of(st.sampled_from(VALUES), st.binary(max_size=60))),
             max_size=12),
    st.binary(max_size=400),
    st.lists(st.binary(max_size=200), max_size=4),
)
corpus_mutations = st.builds(
    lambda name, cut, junk: load(name)[:cut] + junk,
    st.sampled_from(["gmail_reply.eml", "nested_multipart.eml", "dsn_bounce.eml", "shift_jis.eml"]),
    st.integers(min_value=0, max_value=3000), st.binary(max_size=80))


@pytest.mark.django_db
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(raw=st.one_of(st.binary(max_size=2000), mail_like, corpus_mutations))
def test_parser_never_raises_and_envelope_is_kept(raw, email_channel):
    # given arbitrary bytes stored as an envelope
    envelope = envelope_store(channel=email_channel, kind="email", body=raw, source="smtp")
    # when the adapter parses and the envelope is processed
    result = get_adapter("email").parse(envelope, email_channel)
    assert result.messages or result.statuses or result.ignored_reason
    envelope_process(envelope)
    # then the raw bytes are still there and the envelope is processed (or ignored)
    stored = InboundEnvelope.objects.get(pk=envelope.pk)
    assert bytes(stored.body) == raw
    assert stored.status in (EnvelopeStatus.PROCESSED, EnvelopeStatus.IGNORED), stored.error
