"""Writes on a Twilio call's message: status, duration and outcome, the
voicemail recording and its transcription. All idempotent and order-free:
Twilio's callbacks may arrive in any order and more than once."""
from __future__ import annotations

import logging

from django.db import transaction
from django.utils.translation import gettext as _

from conversations import realtime
from conversations.models import Direction, Message
from conversations.services import attachment_add

log = logging.getLogger(__name__)

# Twilio CallStatus -> outcome shown to agents (also log_call's outcome values)
FINAL_STATUSES = {"completed", "busy", "no-answer", "failed", "canceled"}


def call_message(channel, call_sid: str) -> Message | None:
    return Message.objects.filter(channel=channel, external_id=call_sid, direction=Direction.INBOUND).first()


def _outcome(call: dict) -> str:
    if call.get("recording_sid"):
        return "voicemail"
    if call.get("dial_status") == "completed":
        return "answered"
    status = call.get("status", "")
    if status == "busy":
        return "busy"
    if status == "failed":
        return "failed"
    if status in ("no-answer", "canceled", "completed"):
        return "missed"
    return call.get("outcome", "") or ""


def call_update(*, message: Message, status: str = "", duration: int | None = None, dial_status: str = "",
                recording: dict | None = None, transcription: dict | None = None,
                recording_file: tuple[str, str, bytes] | None = None) -> Message:
    """Merge what one callback says about the call into meta["call"]."""
    with transaction.atomic():
        msg = Message.objects.select_for_update().get(pk=message.pk)
        meta = dict(msg.meta or {})
        call = dict(meta.get("call") or {})
        fields = set()
        if status and (call.get("status") not in FINAL_STATUSES or status in FINAL_STATUSES):
            call["status"] = status
        if duration is not None:
            call["duration"] = max(int(duration), int(call.get("duration") or 0))
        if dial_status:
            call["dial_status"] = dial_status
        if recording:
            if recording_file and call.get("recording_sid") != recording.get("sid"):
                filename, content_type, content = recording_file
                try:
                    attachment_add(message=msg, filename=filename, content_type=content_type, content=content)
                except ValueError as exc:
                    call["recording_error"] = str(exc)
            call["recording_sid"] = recording.get("sid", "")
            call["recording_duration"] = recording.get("duration")
            if recording.get("error"):
                call["recording_error"] = recording["error"]
        if transcription and call.get("transcription_sid") != transcription.get("sid"):
            text = transcription.get("text", "")
            call["transcription_sid"] = transcription.get("sid", "")
            call["transcription_status"] = transcription.get("status", "")
            if text:
                call["transcription"] = text
                msg.body_text = (msg.body_text + "\n\n" + _("Voicemail: %(text)s") % {"text": text}).strip()
                fields.add("body_text")
        call["outcome"] = _outcome(call)
        meta["call"] = call
        msg.meta = meta
        fields.add("meta")
        msg.save(update_fields=sorted(fields))
        payload = {"event": "message.updated", "conversation": msg.conversation_id,
                   "message": {"id": msg.pk, "channel": msg.channel_kind, "text": msg.body_text[:500],
                               "call": call}}
        conv_id = msg.conversation_id
        transaction.on_commit(lambda: realtime.send([f"conversation.{conv_id}"], payload))
    return msg
