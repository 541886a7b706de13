"""The agents' WebSocket: auth, origin, group permissions, presence, availability, catch-up."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.utils import timezone

from conversations import services
from helpdesk.asgi import application
from tests.factories import ChannelFactory

from .conftest import agent_socket, drain, recv_until

pytestmark = pytest.mark.django_db(transaction=True)


def run(coro_fn):
    return async_to_sync(coro_fn)()


def _session_cookie(client, user) -> bytes:
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def test_anonymous_is_rejected(personas):
    async def scenario():
        comm = WebsocketCommunicator(application, "/ws/agent/", headers=[(b"host", b"localhost"),
                                                                          (b"origin", b"http://localhost")])
        connected, code = await comm.connect()
        assert not connected
        assert code == 4401
    run(scenario)


def test_session_cookie_authenticates_through_the_real_stack(personas, client):
    cookie = _session_cookie(client, personas.ana)

    async def scenario():
        comm = WebsocketCommunicator(application, "/ws/agent/", headers=[
            (b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie)])
        connected, _ = await comm.connect()
        assert connected
        ready = await comm.receive_json_from()
        assert ready["event"] == "ready" and ready["user"]["id"] == personas.ana.pk
        await comm.disconnect()
    run(scenario)


@pytest.mark.parametrize("origin", [b"http://evil.example", None])
def test_agent_socket_from_another_site_is_refused(personas, client, origin):
    cookie = _session_cookie(client, personas.ana)

    async def scenario():
        headers = [(b"host", b"localhost"), (b"cookie", cookie)] + ([(b"origin", origin)] if origin else [])
        comm = WebsocketCommunicator(application, "/ws/agent/", headers=headers)
        connected, _ = await comm.connect()
        assert not connected  # cross-site WebSocket hijacking with the agent's cookie
    run(scenario)


def test_agent_never_receives_events_of_conversations_they_may_not_see(personas, channels, inbound):
    """bob (tech) must not get a billing conversation's message; ana (billing) and the manager do."""
    async def scenario():
        ana, bob, manager = agent_socket(personas.ana), agent_socket(personas.bob), agent_socket(personas.manager)
        for comm in (ana, bob, manager):
            assert (await comm.connect())[0]
            await comm.receive_json_from()  # ready
        result = await database_sync_to_async(services.ingest)(inbound(channels.api, "email", "kim@example.org",
                                                                        text="my invoice is wrong"))
        conv_id = result.message.conversation_id
        got = await recv_until(ana, lambda f: f["event"] == "conversation.created")
        assert got["message"]["text"] == "my invoice is wrong"
        await recv_until(manager, lambda f: f["event"] == "conversation.created")
        # bob may not even subscribe to it by id
        await bob.send_json_to({"type": "viewing", "conversation": conv_id})
        bob_frames = []
        error = await recv_until(bob, lambda f: bob_frames.append(f) or f["event"] == "error")
        assert error["code"] == "not_found"
        assert [f for f in bob_frames if f["event"] != "agent.availability"] == [error]
        await database_sync_to_async(services.ingest)(inbound(channels.api, "email", "kim@example.org",
                                                               text="second message"))
        await recv_until(ana, lambda f: f["event"] == "message.created")
        assert [f for f in await drain(bob) if f.get("event") != "agent.availability"] == []
        # ana gets each event once although she is in team.<billing> and, viewing, conversation.<id>
        await ana.send_json_to({"type": "viewing", "conversation": conv_id})
        await recv_until(ana, lambda f: f["event"] == "presence")
        await database_sync_to_async(services.ingest)(inbound(channels.api, "email", "kim@example.org", text="third"))
        frames = [f for f in await drain(ana, 0.5) if f.get("event") == "message.created"]
        assert len(frames) == 1
        for comm in (ana, bob, manager):
            await comm.disconnect()
    run(scenario)


def test_conversation_moved_to_another_team_stops_reaching_its_viewer(personas, channels, inbound):
    async def scenario():
        result = await database_sync_to_async(services.ingest)(inbound(channels.api, "email", "lee@example.org"))
        conv = result.message.conversation
        ana = agent_socket(personas.ana)
        await ana.connect()
        await ana.receive_json_from()
        await ana.send_json_to({"type": "viewing", "conversation": conv.pk})
        await recv_until(ana, lambda f: f["event"] == "presence")
        await database_sync_to_async(services.assign)(conversation=conv, team=personas.tech, set_team=True,
                                                      actor=personas.manager)
        hidden = await recv_until(ana, lambda f: f["event"] in ("conversation.hidden", "conversation.updated"))
        assert hidden == {"event": "conversation.hidden", "conversation": conv.pk, "at": hidden["at"]}
        await database_sync_to_async(services.ingest)(inbound(channels.api, "email", "lee@example.org", text="x"))
        assert [f for f in await drain(ana) if "conversation" in f] == []
        await ana.disconnect()
    run(scenario)


def test_presence_viewing_and_typing_collision(personas, channels, inbound):
    async def scenario():
        result = await database_sync_to_async(services.ingest)(inbound(channels.api, "email", "kim@example.org"))
        conv_id = result.message.conversation_id
        ana, manager = agent_socket(personas.ana), agent_socket(personas.manager)
        for comm in (ana, manager):
            await comm.connect()
            await comm.receive_json_from()
        await manager.send_json_to({"type": "viewing", "conversation": conv_id})
        await recv_until(manager, lambda f: f["event"] == "presence")
        await ana.send_json_to({"type": "viewing", "conversation": conv_id})
        seen = await recv_until(manager, lambda f: f["event"] == "presence" and len(f["viewers"]) == 2)
        assert {v["id"] for v in seen["viewers"]} == {personas.ana.pk, personas.manager.pk}
        await ana.send_json_to({"type": "typing", "conversation": conv_id, "typing": True})
        typing = await recv_until(manager, lambda f: f["event"] == "presence" and f["typing"])
        assert [t["name"] for t in typing["typing"]] == [personas.ana.name]
        await ana.send_json_to({"type": "leave", "conversation": conv_id})
        left = await recv_until(manager, lambda f: f["event"] == "presence" and len(f["viewers"]) == 1)
        assert left["viewers"][0]["id"] == personas.manager.pk
        # typing in a conversation one is not viewing is refused
        await ana.send_json_to({"type": "typing", "conversation": conv_id, "typing": True})
        assert (await recv_until(ana, lambda f: f["event"] == "error"))["code"] == "not_viewing"
        await ana.disconnect()
        await manager.disconnect()
    run(scenario)


def test_availability_is_stored_used_by_assignment_and_restored(personas):
    from helpdesk.models import User

    async def scenario():
        ana = agent_socket(personas.ana)
        await ana.connect()
        await ana.receive_json_from()
        assert await database_sync_to_async(lambda: User.objects.get(pk=personas.ana.pk).availability)() == "online"
        await ana.send_json_to({"type": "availability", "status": "away"})
        await recv_until(ana, lambda f: f["event"] == "agent.availability" and f["status"] == "away")
        assert await database_sync_to_async(lambda: User.objects.get(pk=personas.ana.pk).availability)() == "away"
        await ana.disconnect()
        assert await database_sync_to_async(lambda: User.objects.get(pk=personas.ana.pk).availability)() == "offline"
        again = agent_socket(await database_sync_to_async(User.objects.get)(pk=personas.ana.pk))
        await again.connect()
        ready = await again.receive_json_from()
        assert ready["event"] == "ready"
        assert await database_sync_to_async(lambda: User.objects.get(pk=personas.ana.pk).availability)() == "away"
        await again.disconnect()
    run(scenario)


def test_a_connection_storm_sends_batched_availability_frames(personas, monkeypatch):
    """N agents connecting at once: not N frames to each of the N sockets, but
    one batch per window, with every agent's stored status."""
    from conversations import realtime
    from helpdesk.models import User
    from tests.factories import UserFactory

    monkeypatch.setattr(realtime, "AVAILABILITY_BATCH_SECONDS", 2.0)
    agents = [UserFactory(username=f"storm{i}", role="agent") for i in range(8)]
    personas.billing.members.add(*agents)

    async def scenario():
        socks = [agent_socket(user) for user in agents]
        for comm in socks:
            await comm.connect()
            await comm.receive_json_from()  # ready
        first = socks[0]
        frames = []
        for _ in range(40):
            frames += [f for f in await drain(first, timeout=0.5) if f["event"] == "agent.availability"]
            seen = {a["agent"]: a["status"] for f in frames for a in f["agents"]}
            if len(seen) == len(agents):
                break
        assert seen == {user.pk: "online" for user in agents}
        # without batching this socket gets one frame per agent (8); the 8
        # connections may straddle the end of one window, not of two
        assert 1 <= len(frames) <= 2
        await socks[1].send_json_to({"type": "availability", "status": "away"})
        reply = await recv_until(socks[1], lambda f: f["event"] == "agent.availability" and "agent" in f)
        assert reply["agent"] == agents[1].pk and reply["agents"] == [{"agent": agents[1].pk, "status": "away"}]
        later = await recv_until(first, lambda f: f["event"] == "agent.availability"
                                 and {"agent": agents[1].pk, "status": "away"} in f["agents"], timeout=5)
        assert later["agents"] == [{"agent": agents[1].pk, "status": "away"}]
        for comm in socks:
            await comm.disconnect()
        assert await database_sync_to_async(
            lambda: set(User.objects.filter(pk__in=[u.pk for u in agents]).values_list("availability", flat=True)))() \
            == {"offline"}
    run(scenario)


def test_assignment_only_picks_online_agents(personas, channels, inbound):
    from conversations.assignment import pick_agent

    personas.billing.assignment_mode = "round_robin"
    personas.billing.save()
    assert pick_agent(personas.billing) is None  # ana is offline until she connects

    async def scenario():
        ana = agent_socket(personas.ana)
        await ana.connect()
        await ana.receive_json_from()
        assert (await database_sync_to_async(pick_agent)(personas.billing)).pk == personas.ana.pk
        await ana.disconnect()
    run(scenario)
    assert pick_agent(personas.billing) is None


def test_reconnect_catch_up_has_no_gaps(personas, channels, inbound):
    async def scenario():
        ana = agent_socket(personas.ana)
        await ana.connect()
        ready = await ana.receive_json_from()
        since = ready["at"]
        await ana.disconnect()
        # while ana is away: a new billing conversation, a tech one, and a status change
        billing = await database_sync_to_async(services.ingest)(inbound(channels.api, "email", "a@example.org",
                                                                         text="while you were away"))
        tech_channel = await database_sync_to_async(ChannelFactory)(kind="api", name="tech api", team=personas.tech)
        await database_sync_to_async(services.ingest)(inbound(tech_channel, "email", "b@example.org", text="tech only"))
        again = agent_socket(personas.ana)
        await again.connect()
        await again.receive_json_from()
        await again.send_json_to({"type": "catch_up", "since": since})
        frames = []
        while True:
            frame = await again.receive_json_from()
            frames.append(frame)
            if frame["event"] == "catch_up.done":
                break
        texts = [f["message"]["text"] for f in frames if f["event"] == "message.created"]
        assert texts == ["while you were away"]
        assert {f["conversation"]["id"] for f in frames if f["event"] == "conversation.updated"} == {
            billing.message.conversation_id}
        assert all(f.get("catch_up") for f in frames if f["event"] in ("message.created", "conversation.updated"))
        assert frames[-1]["truncated"] is False
        await again.send_json_to({"type": "catch_up", "since": "yesterday"})
        assert (await recv_until(again, lambda f: f["event"] == "error"))["code"] == "bad_since"
        await again.disconnect()
    run(scenario)


def test_presence_sweep_sets_silent_agents_offline(personas):
    from conversations import presence
    from helpdesk.models import User

    User.objects.filter(pk=personas.bob.pk).update(availability="online")
    assert presence.sweep() == 1
    assert User.objects.get(pk=personas.bob.pk).availability == "offline"


def test_flooding_agent_socket_is_told_to_slow_down(personas):
    from conversations.consumers import AGENT_RATE

    async def scenario():
        ana = agent_socket(personas.ana)
        await ana.connect()
        await ana.receive_json_from()
        for _ in range(AGENT_RATE + 5):
            await ana.send_json_to({"type": "leave", "conversation": 1})
        frame = await recv_until(ana, lambda f: f["event"] == "error")
        assert frame["code"] == "throttled"
        await ana.send_to(text_data="x" * 20000)
        assert (await recv_until(ana, lambda f: f["event"] == "error"))["code"] in ("too_large", "throttled")
        await ana.disconnect()
    run(scenario)


def test_sla_warning_reaches_the_team(personas, channels, inbound):
    from conversations import realtime

    async def scenario():
        result = await database_sync_to_async(services.ingest)(inbound(channels.api, "email", "kim@example.org"))
        ana, bob = agent_socket(personas.ana), agent_socket(personas.bob)
        for comm in (ana, bob):
            await comm.connect()
            await comm.receive_json_from()
        due = timezone.now() + timedelta(minutes=5)
        await database_sync_to_async(realtime.publish_sla_warning)(result.message.conversation_id,
                                                                   kind="first_response", due_at=due)
        frame = await recv_until(ana, lambda f: f["event"] == "sla.warning")
        assert frame["sla"]["kind"] == "first_response"
        assert [f for f in await drain(bob) if f.get("event", "").startswith("sla")] == []
        await ana.disconnect()
        await bob.disconnect()
    run(scenario)


def test_socket_frames_skip_the_session_save_check():
    """helpdesk.asgi.SocketSessionWrapper: websocket frames go straight out
    (the session is not even resolved for them); an HTTP response start still
    takes channels' session-saving path."""
    from channels.sessions import InstanceSessionWrapper
    from django.utils.functional import LazyObject

    from helpdesk.asgi import SocketSessionWrapper

    sent = []

    async def real_send(message):
        sent.append(message)

    async def scenario(wrapper_class, message):
        wrapper = wrapper_class({"type": "websocket", "cookies": {}}, real_send)
        assert isinstance(wrapper.scope["session"], LazyObject)  # unresolved: touching it raises
        await wrapper.send(message)

    frame = {"type": "websocket.send", "text": "{}"}
    async_to_sync(scenario)(SocketSessionWrapper, frame)
    assert sent == [frame]
    with pytest.raises(NotImplementedError):  # channels' own wrapper looks at the session on every frame
        async_to_sync(scenario)(InstanceSessionWrapper, frame)
    with pytest.raises(NotImplementedError):  # and ours still does for an HTTP response start
        async_to_sync(scenario)(SocketSessionWrapper, {"type": "http.response.start", "status": 200})


def test_queued_broadcasts_go_out_in_a_few_loop_turns(personas, settings):
    """A socket's queued events are forwarded back to back: Channels' own
    dispatch loop (await_many_dispatch) took three turns of the event loop per
    event, so on a busy loop a socket getting many events fell behind. In-memory
    layer: its queue is filled at once, the count of turns is exact."""
    import asyncio

    from channels.layers import get_channel_layer

    from conversations.realtime import broadcast_event

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    events = 50

    async def scenario():
        comm = agent_socket(personas.ana)
        assert (await comm.connect())[0]
        assert (await comm.receive_json_from())["event"] == "ready"
        await drain(comm, timeout=0.2)
        layer = get_channel_layer()
        [channel] = layer.groups[f"agent.{personas.ana.pk}"]  # the socket's channel
        for i in range(events):  # the in-memory layer's send queues without a turn of the loop
            await layer.send(channel, broadcast_event({"event": "mention", "message": i, "id": f"e{i}", "at": "now"}))
        got, turns = [], 0
        while len(got) < events and turns < 1000:
            await asyncio.sleep(0)
            turns += 1
            while not comm.output_queue.empty():
                got.append(comm.output_queue.get_nowait())
        assert [json.loads(f["text"])["message"] for f in got] == list(range(events))
        assert turns <= 5, f"{events} queued events took {turns} loop turns"
        # the socket still answers its browser's frames and closes cleanly
        await comm.send_json_to({"type": "ping"})
        assert (await recv_until(comm, lambda f: f["event"] == "pong"))["event"] == "pong"
        await comm.disconnect()
    run(scenario)


def test_availability_batch_is_sent_from_a_plain_event_loop(personas):
    """As under uvicorn, where no async_to_sync runs the loop: the change is
    made in Channels' one sync thread (database_sync_to_async), whose context
    says "in use"; a batch task inheriting that context could not reach the
    database ("Single thread executor already being used, would deadlock") and
    the frame was lost (logged by each ASGI process of bench/realtime.py while
    its agents connected)."""
    import asyncio

    async def scenario():
        listener = agent_socket(personas.manager)
        assert (await listener.connect())[0]
        await listener.receive_json_from()  # ready
        ana = agent_socket(personas.ana)
        assert (await ana.connect())[0]
        await ana.receive_json_from()
        frame = await recv_until(listener, lambda f: f["event"] == "agent.availability"
                                 and {"agent": personas.ana.pk, "status": "online"} in f["agents"], timeout=5)
        assert frame["agents"]
        await ana.disconnect()
        await listener.disconnect()
    asyncio.run(scenario())
