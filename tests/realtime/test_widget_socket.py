"""The chat widget's WebSocket and HTTP endpoints."""
from __future__ import annotations

import base64

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.core import mail

from channels_app.adapters.chat import snippet, tokens
from channels_app.models import InboundEnvelope
from conversations import services
from conversations.models import Conversation, Message
from customers.models import Identity
from tests.factories import ChannelFactory, CustomerFactory, IdentityFactory

from .conftest import agent_socket, drain, recv_until, widget_socket

pytestmark = pytest.mark.django_db(transaction=True)

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==")


def run(coro_fn):
    return async_to_sync(coro_fn)()


@pytest.fixture
def chat(channels):
    channels.chat.settings = {"allowed_origins": ["https://shop.example"], "greeting": "Hello there", "color": "#0a7d33",
                              "rate_limit": 5}
    channels.chat.save()
    return channels.chat


async def hello(comm, token=None):
    connected, code = await comm.connect(timeout=10)
    assert connected, code
    await comm.send_json_to({"type": "hello", "token": token})
    return await recv_until(comm, lambda f: f["type"] == "welcome", timeout=10)


def test_origin_is_checked_on_the_handshake(chat):
    async def scenario():
        for origin, ok in [(b"https://shop.example", True), (b"http://localhost", True),
                           (b"https://evil.example", False), (None, False)]:
            comm = widget_socket(chat, origin=origin)
            connected, code = await comm.connect()
            assert connected is ok, origin
            if ok:
                await comm.disconnect()
            else:
                assert code == 4403
        # an unknown or non-chat channel
        api_channel = await database_sync_to_async(ChannelFactory)(kind="api")
        comm = widget_socket(api_channel)
        assert (await comm.connect()) == (False, 4404)
    run(scenario)


def test_visitor_message_goes_through_an_envelope_and_reaches_the_team(personas, chat):
    async def scenario():
        ana, bob = agent_socket(personas.ana), agent_socket(personas.bob)
        for comm in (ana, bob):
            await comm.connect()
            await comm.receive_json_from()
        visitor = widget_socket(chat, origin=b"https://shop.example")
        welcome = await hello(visitor)
        assert welcome["config"]["greeting"] == "Hello there" and welcome["config"]["color"] == "#0a7d33"
        assert welcome["config"]["online"] is True  # ana (billing) is connected
        assert welcome["messages"] == [] and welcome["token"]
        await visitor.send_json_to({"type": "message", "client_id": "c1", "text": "Where is my parcel?"})
        sent = await recv_until(visitor, lambda f: f["type"] == "sent")
        assert sent["client_id"] == "c1" and sent["message"]["text"] == "Where is my parcel?"
        created = await recv_until(ana, lambda f: f["event"] == "conversation.created")
        assert created["message"]["text"] == "Where is my parcel?" and created["message"]["channel"] == "chat"
        assert [f for f in await drain(bob) if "message" in f] == []
        # a resend of the same client id (after a drop) is not a second message
        await visitor.send_json_to({"type": "message", "client_id": "c1", "text": "Where is my parcel?"})
        await recv_until(visitor, lambda f: f["type"] == "sent")
        for comm in (ana, bob, visitor):
            await comm.disconnect()
        return welcome["visitor"]
    visitor_id = run(scenario)
    message = Message.objects.get()
    assert message.envelope.kind == "chat" and message.envelope.status == "processed"
    assert InboundEnvelope.objects.count() == 2
    assert Identity.objects.get(kind="chat").value == visitor_id
    assert message.conversation.team == personas.billing


def test_reload_continues_the_conversation_with_history(personas, chat):
    async def scenario():
        first = widget_socket(chat)
        welcome = await hello(first)
        await first.send_json_to({"type": "message", "client_id": "a", "text": "first visit"})
        await recv_until(first, lambda f: f["type"] == "sent")
        await first.disconnect()
        again = widget_socket(chat)
        back = await hello(again, welcome["token"])
        assert back["visitor"] == welcome["visitor"] and back["token"] == welcome["token"]
        assert [m["text"] for m in back["messages"]] == ["first visit"]
        await again.send_json_to({"type": "message", "client_id": "b", "text": "back again"})
        await recv_until(again, lambda f: f["type"] == "sent")
        await again.disconnect()
        # a forged or other channel's token is a new visitor
        other = await database_sync_to_async(ChannelFactory)(kind="chat", name="Other site")
        forged = widget_socket(chat)
        fresh = await hello(forged, tokens.make_token(other, welcome["visitor"]))
        assert fresh["visitor"] != welcome["visitor"] and fresh["messages"] == []
        await forged.disconnect()
    run(scenario)
    assert Conversation.objects.count() == 1
    assert Conversation.objects.get().message_count == 2


def test_flooding_visitor_is_throttled_not_the_server(personas, chat, monkeypatch):
    import time
    from types import SimpleNamespace

    from channels_app.adapters.chat import consumers

    # the limit counts per fixed 10 s window: on a loaded machine the 12 messages
    # could straddle two windows, so the throttle's clock stands still here
    monkeypatch.setattr(consumers, "time", SimpleNamespace(time=lambda: 1_700_000_003.0, monotonic=time.monotonic))

    async def scenario():
        flood = widget_socket(chat)
        await hello(flood)
        for i in range(12):
            await flood.send_json_to({"type": "message", "client_id": f"f{i}", "text": f"spam {i}"})
        frames = []
        while len(frames) < 12:  # (the visitor's own copies of its messages, for other tabs, are skipped)
            frame = await flood.receive_json_from(timeout=15)
            if frame["type"] in ("sent", "error"):
                frames.append(frame)
        codes = [f.get("code") for f in frames if f["type"] == "error"]
        assert codes.count("throttled") == 7 and sum(f["type"] == "sent" for f in frames) == 5
        # too long and too large frames are refused without storing anything
        await flood.send_json_to({"type": "message", "client_id": "big", "text": "x" * 6000})
        await flood.send_to(text_data="y" * 70000)
        errors = [await recv_until(flood, lambda f: f["type"] == "error", timeout=15) for _ in range(2)]
        assert {e["code"] for e in errors} == {"too_long", "too_large"}
        # meanwhile another visitor is served normally
        calm = widget_socket(chat)
        await hello(calm)
        await calm.send_json_to({"type": "message", "client_id": "ok", "text": "hello"})
        assert (await recv_until(calm, lambda f: f["type"] in ("sent", "error"), timeout=15))["type"] == "sent"
        await calm.disconnect()
        await flood.disconnect()
    run(scenario)
    assert Message.objects.count() == 6


def test_persistent_flooder_is_disconnected(personas, chat):
    async def scenario():
        flood = widget_socket(chat)
        await hello(flood)
        closed = None
        for i in range(40):
            await flood.send_json_to({"type": "message", "client_id": f"f{i}", "text": "spam"})
        for _ in range(60):
            out = await flood.receive_output(timeout=3)
            if out["type"] == "websocket.close":
                closed = out
                break
        assert closed and closed["code"] == 4429
    run(scenario)


def test_agent_reply_reaches_visitor_with_author_and_receipts_flow_back(personas, chat):
    async def scenario():
        visitor = widget_socket(chat)
        await hello(visitor)
        await visitor.send_json_to({"type": "message", "client_id": "q", "text": "Hi"})
        sent = await recv_until(visitor, lambda f: f["type"] == "sent")
        conv = await database_sync_to_async(
            lambda: Message.objects.get(pk=sent["message"]["id"]).conversation)()
        ana = agent_socket(personas.ana)
        await ana.connect()
        await ana.receive_json_from()
        await ana.send_json_to({"type": "viewing", "conversation": conv.pk})
        seen = await recv_until(visitor, lambda f: f["type"] == "seen")
        assert seen["at"]
        # typing both ways
        await ana.send_json_to({"type": "typing", "conversation": conv.pk, "typing": True})
        typing = await recv_until(visitor, lambda f: f["type"] == "typing")
        assert typing["typing"] is True and typing["author"]["name"] == "Ana"
        await visitor.send_json_to({"type": "typing", "typing": True})
        assert (await recv_until(ana, lambda f: f["event"] == "customer.typing"))["typing"] is True
        reply = await database_sync_to_async(services.reply)(conversation=conv, author=personas.ana,
                                                              body="Hello, Ana here")
        got = await recv_until(visitor, lambda f: f["type"] == "message")
        assert got["message"]["text"] == "Hello, Ana here"
        assert got["message"]["author"] == {"name": "Ana", "initials": personas.ana.initials,
                                            "color": personas.ana.avatar_color}
        await visitor.send_json_to({"type": "ack", "ids": [reply.pk], "status": "read"})
        status = await recv_until(ana, lambda f: f["event"] == "message.status" and f["message"]["id"] == reply.pk
                                  and f["message"]["delivery_status"] == "read")
        assert status["conversation"] == conv.pk
        await ana.disconnect()
        await visitor.disconnect()
    run(scenario)
    assert not mail.outbox


def test_visitor_cannot_ack_someone_elses_message(personas, chat, channels, inbound):
    other = services.ingest(inbound(channels.api, "email", "zed@example.org"))
    reply = services.reply(conversation=other.message.conversation, author=personas.ana, body="private",
                           channel=channels.api, deliver=False)

    async def scenario():
        visitor = widget_socket(chat)
        await hello(visitor)
        await visitor.send_json_to({"type": "ack", "ids": [reply.pk], "status": "read"})
        await drain(visitor)
        await visitor.disconnect()
    run(scenario)
    reply.refresh_from_db()
    assert reply.read_at is None


def test_prechat_email_joins_the_existing_customer(personas, chat):
    known = CustomerFactory(name="Kim Known")
    IdentityFactory(customer=known, kind="email", value="kim@example.org")

    async def scenario():
        visitor = widget_socket(chat)
        await hello(visitor)
        await visitor.send_json_to({"type": "message", "client_id": "p", "text": "hi", "name": "Kim",
                                    "email": "Kim@Example.org"})
        await recv_until(visitor, lambda f: f["type"] == "sent")
        await visitor.disconnect()
    run(scenario)
    chat_identity = Identity.objects.get(kind="chat")
    assert chat_identity.customer_id == known.pk
    assert Message.objects.get().conversation.customer_id == known.pk


def test_offline_visitor_leaves_email_and_gets_the_reply_by_email(personas, chat, channels):
    async def scenario():
        visitor = widget_socket(chat)
        welcome = await hello(visitor)
        assert welcome["config"]["online"] is False  # nobody of billing is connected
        assert welcome["config"]["offline_message"]
        await visitor.send_json_to({"type": "message", "client_id": "o", "text": "Anyone there?"})
        await recv_until(visitor, lambda f: f["type"] == "sent")
        await visitor.send_json_to({"type": "email", "email": "late@example.org", "name": "Lou"})
        assert (await recv_until(visitor, lambda f: f["type"] in ("email_saved", "error")))["type"] == "email_saved"
        await visitor.disconnect()
    run(scenario)
    conv = Conversation.objects.get()
    assert Identity.objects.filter(customer=conv.customer, kind="email", value="late@example.org").exists()
    reply = services.reply(conversation=conv, author=personas.ana, body="Sorry for the wait!")
    reply.refresh_from_db()
    copy = Message.objects.get(pk=reply.meta["emailed_as"])
    assert copy.channel == channels.email and copy.recipient == "late@example.org"
    assert "Sorry for the wait!" in copy.body_text and copy.conversation_id == conv.pk


def test_unseen_reply_is_emailed_after_the_delay(personas, chat, channels, settings):
    from datetime import timedelta

    from django.utils import timezone

    from channels_app.adapters.chat.offline import email_unseen_replies

    settings.CHAT_OFFLINE_EMAIL_DELAY = 300

    async def scenario():
        visitor = widget_socket(chat)
        await hello(visitor)
        await visitor.send_json_to({"type": "message", "client_id": "u", "text": "hi", "email": "u@example.org"})
        await recv_until(visitor, lambda f: f["type"] == "sent")
        conv = await database_sync_to_async(Conversation.objects.get)()
        reply = await database_sync_to_async(services.reply)(conversation=conv, author=personas.ana, body="Answer")
        await recv_until(visitor, lambda f: f["type"] == "message")
        # the visitor is still on the page: not emailed, even when old
        later = timezone.now() + timedelta(seconds=301)
        assert await database_sync_to_async(email_unseen_replies)(later) == 0
        await visitor.disconnect()
        assert await database_sync_to_async(email_unseen_replies)() == 0  # too early
        assert await database_sync_to_async(email_unseen_replies)(later) == 1
        assert await database_sync_to_async(email_unseen_replies)(later) == 0  # once only
        return reply.pk
    reply_id = run(scenario)
    assert Message.objects.filter(channel=channels.email, meta__chat_copy_of=reply_id).count() == 1


def test_resolution_offers_the_csat_question_inline(personas, chat):
    from metrics.models import SurveyInvitation

    async def scenario():
        visitor = widget_socket(chat)
        welcome = await hello(visitor)
        await visitor.send_json_to({"type": "message", "client_id": "r", "text": "thanks, solved"})
        await recv_until(visitor, lambda f: f["type"] == "sent")
        conv = await database_sync_to_async(Conversation.objects.get)()
        invitation = await database_sync_to_async(SurveyInvitation.objects.get_or_create)(
            conversation=conv, customer_id=conv.customer_id, defaults={"kind": "csat"})
        await database_sync_to_async(services.resolve_conversation)(conversation=conv, actor=personas.ana)
        status = await recv_until(visitor, lambda f: f["type"] == "status")
        assert status["status"] == "resolved"
        assert status["survey"]["kind"] == "csat" and invitation[0].token in status["survey"]["url"]
        await visitor.disconnect()
        again = widget_socket(chat)
        back = await hello(again, welcome["token"])
        assert back["status"] == "resolved" and back["survey"]["url"] == status["survey"]["url"]
        await again.disconnect()
    run(scenario)


def test_upload_limits_and_storage(personas, chat, client):
    token = tokens.make_token(chat, tokens.new_visitor_id())
    url = f"/widget/{chat.uuid}/upload/"
    from django.core.files.uploadedfile import SimpleUploadedFile

    def post(name, content, ctype, tok=token, origin="https://shop.example"):
        return client.post(url, {"token": tok, "client_id": "u1", "file": SimpleUploadedFile(name, content, ctype)},
                           HTTP_ORIGIN=origin)

    ok = post("shot.png", PNG, "image/png")
    assert ok.status_code == 201, ok.content
    assert ok["Access-Control-Allow-Origin"] == "https://shop.example"
    att = ok.json()["message"]["attachments"][0]
    assert att["image"] and att["name"] == "shot.png"
    message = Message.objects.get()
    assert message.attachments.get().size == len(PNG) and message.envelope.source == "upload"
    # the visitor can fetch it by its signed link; a tampered link is a 404
    assert client.get(att["url"]).status_code == 200
    assert client.get(att["url"][:-3] + "xx/").status_code == 404
    assert post("evil.png", b"MZ\x90\x00 not a png", "image/png").status_code == 415
    assert post("run.exe", b"MZ\x90\x00", "application/x-msdownload").status_code == 415
    chat.settings["upload_max_bytes"] = 2048
    chat.save()
    assert post("big.png", PNG + b"\0" * 4096, "image/png").status_code == 413
    assert post("shot.png", PNG, "image/png", tok="forged").status_code == 403
    assert post("shot.png", PNG, "image/png", origin="https://evil.example").status_code == 403
    assert Message.objects.count() == 1


def test_snippet_demo_page_and_script(chat, client, rf):
    html = snippet(chat, rf.get("/"))
    assert html == f'<script src="http://testserver/widget/widget.js" data-threadline-channel="{chat.uuid}" async></script>'
    page = client.get(f"/widget/demo/{chat.uuid}/")
    assert page.status_code == 200
    assert "script-src 'self'" in page["Content-Security-Policy"] and "unsafe-inline" not in page[
        "Content-Security-Policy"]
    assert str(chat.uuid) in page.content.decode()
    script = client.get("/widget/widget.js")
    assert script.status_code == 200 and script["Content-Type"].startswith("text/javascript")
    import gzip

    assert len(gzip.compress(script.content)) < 30 * 1024
    assert client.get("/widget/widget.css").status_code == 200


def test_widget_switches_to_online_when_an_agent_of_the_team_comes(personas, chat):
    async def scenario():
        visitor = widget_socket(chat)
        welcome = await hello(visitor)
        assert welcome["config"]["online"] is False
        bob = agent_socket(personas.bob)  # tech: not this channel's team
        await bob.connect()
        await bob.receive_json_from()
        assert [f for f in await drain(visitor) if f["type"] == "availability"] == []
        ana = agent_socket(personas.ana)
        await ana.connect()
        await ana.receive_json_from()
        assert (await recv_until(visitor, lambda f: f["type"] == "availability"))["online"] is True
        await ana.send_json_to({"type": "availability", "status": "away"})
        assert (await recv_until(visitor, lambda f: f["type"] == "availability"))["online"] is False
        for comm in (ana, bob, visitor):
            await comm.disconnect()
    run(scenario)


def test_visitor_message_is_one_transaction_and_a_failure_is_kept_for_replay(personas, chat, monkeypatch):
    from django.db import connection

    from channels_app.adapters.chat.inbound import ingest_visitor_message
    from channels_app.services import envelope_replay

    writes, commits = [], []

    def record(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "WITH")):
            writes.append((sql, connection.in_atomic_block, len(commits)))
        return execute(sql, params, many, context)

    real_commit = connection.commit
    monkeypatch.setattr(connection, "commit", lambda: (commits.append(1), real_commit())[1])
    with connection.execute_wrapper(record):
        message = ingest_visitor_message(chat, {"visitor": "v-one", "client_id": "c1", "text": "hi"})
    # the envelope (stored, then marked processed; on PostgreSQL inserted
    # processed by the statement that writes the message) and the message:
    # written in the first transaction (what commits later is after-commit
    # work: metrics, automation)
    envelope_writes = [w for w in writes if "inboundenvelope" in w[0]]
    message_writes = [w for w in writes if '"conversations_message"' in w[0]]
    if services.writes_envelope():
        assert len(envelope_writes) == 1 and envelope_writes == message_writes
    else:
        assert len(envelope_writes) == 2 and message_writes
    assert all(in_atomic and committed == 0 for _sql, in_atomic, committed in envelope_writes + message_writes)
    envelope = message.envelope
    assert envelope.status == "processed" and envelope.message_ids == [message.pk] and envelope.attempts == 1

    def broken(msg, **kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(services, "ingest", broken)
    with pytest.raises(RuntimeError):
        ingest_visitor_message(chat, {"visitor": "v-two", "client_id": "c1", "text": "kept"})
    failed = InboundEnvelope.objects.get(status="failed")
    assert "database hiccup" in failed.error and failed.attempts == 1 and b"kept" in bytes(failed.body)
    assert Message.objects.count() == 1
    monkeypatch.undo()
    assert envelope_replay(failed)
    failed.refresh_from_db()
    replayed = Message.objects.get(envelope=failed)
    assert failed.status == "processed" and failed.message_ids == [replayed.pk] and replayed.body_text == "kept"
    # a message the adapter refuses is kept too, with the parse error
    with pytest.raises(ValueError):
        ingest_visitor_message(chat, {"visitor": "v-three", "client_id": "c2", "text": "   "})
    assert InboundEnvelope.objects.filter(status="failed", error__startswith="ParseError").count() == 1


def test_queued_visitor_frames_are_handled_in_a_few_loop_turns(chat):
    """Each of a visitor's frames used to wait three turns of the event loop
    before its handler ran (Channels' await_many_dispatch); see
    conversations.consumers.PumpedConsumer. Frames that the socket answers
    without the database or a thread: the count of turns is exact."""
    import asyncio

    frames = 20

    async def scenario():
        comm = widget_socket(chat)
        await hello(comm)
        await drain(comm, timeout=0.2)
        for _ in range(frames):
            await comm.send_json_to({"type": "message", "text": "  "})
        got, turns = [], 0
        while len(got) < frames and turns < 1000:
            await asyncio.sleep(0)
            turns += 1
            while not comm.output_queue.empty():
                got.append(comm.output_queue.get_nowait())
        assert [f["text"] for f in got] == ['{"type": "error", "code": "empty"}'] * frames
        assert turns <= 5, f"{frames} queued frames took {turns} loop turns"
        await comm.disconnect()
    run(scenario)
