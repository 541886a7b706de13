"""`/hooks/<kind>/<uuid>/`: one inbound URL per configured channel."""
from __future__ import annotations

import logging

from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt

from .adapters import UnknownAdapter, get_adapter
from .adapters.base import Forbidden, ParseError, ParseResult
from .models import Channel
from .services import envelope_from_request, envelope_process, envelope_reject

log = logging.getLogger(__name__)


def _queue_envelope(envelope) -> bool:
    """Hand a verified envelope to a Celery worker. False (process it here) when
    tasks run eagerly (the one-process default, tests) or the broker is down."""
    from helpdesk.celery import app

    from .tasks import replay_envelope

    if app.conf.task_always_eager:
        return False
    try:
        replay_envelope.delay(envelope.pk)
    except Exception:
        log.warning("could not queue envelope %s; processing it in the request", envelope.pk, exc_info=True)
        return False
    return True


@csrf_exempt
def hook(request, kind: str, uuid):
    channel = get_object_or_404(Channel, uuid=uuid, kind=kind, active=True)
    try:
        adapter = get_adapter(kind)
    except UnknownAdapter:
        raise Http404("No adapter for this channel kind")
    if request.method == "GET":
        return adapter.handshake(request, channel)
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    # store first: even a request that fails the signature check is kept
    envelope = envelope_from_request(request, channel, kind)
    try:
        adapter.verify(request, channel)
    except Forbidden as exc:
        log.warning("rejected %s webhook for channel %s from %s: %s", kind, channel.uuid,
                    request.META.get("REMOTE_ADDR"), exc)
        envelope_reject(envelope, str(exc))
        return JsonResponse({"detail": "Forbidden: authenticity check failed."}, status=403)
    if getattr(adapter, "process_later", None) and adapter.process_later(channel) and _queue_envelope(envelope):
        # acknowledged once stored and verified; a worker parses and ingests it
        return adapter.response(envelope, ParseResult())
    try:
        result = envelope_process(envelope)
    except ParseError as exc:
        return JsonResponse({"detail": str(exc), "envelope": envelope.pk}, status=400)
    except Exception:
        log.exception("processing %s envelope %s failed; kept for replay", kind, envelope.pk)
        return JsonResponse({"detail": "Stored, processing failed; it will be replayed.", "envelope": envelope.pk},
                            status=500)
    return adapter.response(envelope, result)
