import pytest

from conversations import services
from conversations.models import ConversationEvent


@pytest.mark.django_db
def test_ingest_reply_roundtrip(channels, inbound, personas, django_capture_on_commit_callbacks):
    result = services.ingest(inbound(channels.api, "email", "Kim@Example.org", name="Kim"))
    assert result.created and result.conversation_created
    conv = result.message.conversation
    with django_capture_on_commit_callbacks(execute=True):
        msg = services.reply(conversation=conv, author=personas.ana, body="Hi Kim")
    msg.refresh_from_db()
    assert msg.delivery_status == "sent"
    kinds = list(ConversationEvent.objects.filter(conversation=conv).values_list("kind", flat=True))
    assert kinds[:2] == ["created", "message_in"] and "message_out" in kinds
