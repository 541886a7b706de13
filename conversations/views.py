"""Agent-facing pages. The full inbox lives in conversations/inbox/ (issue 6)."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, render

from .models import Attachment
from .services import conversations_visible_to


@login_required
def inbox(request):
    conversations = (conversations_visible_to(request.user).select_related("customer", "assignee")
                     .order_by("-last_message_at")[:50])
    return render(request, "conversations/inbox.html", {"conversations": conversations})


@login_required
def attachment_download(request, pk: int):
    """Attachments only for users who may see the conversation; always as a download."""
    attachment = get_object_or_404(Attachment.objects.select_related("message"), pk=pk)
    if not conversations_visible_to(request.user).filter(pk=attachment.message.conversation_id).exists():
        raise Http404
    try:
        handle = attachment.file.open("rb")
    except FileNotFoundError:
        raise Http404
    response = FileResponse(handle, as_attachment=True, filename=attachment.filename,
                            content_type=attachment.content_type or "application/octet-stream")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
