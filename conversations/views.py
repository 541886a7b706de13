"""The agent inbox (issue 6): list, conversation, composer, actions, bulk.

Views are thin: reads come from selectors, writes go through services. Every
conversation is looked up through conversations_visible_to, so another team's
conversation is a 404. htmx requests (HX-Request header) get fragments; plain
requests get full pages and redirects, so everything also works without JS.
"""
from __future__ import annotations

import re

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponse, HttpResponseBadRequest, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from helpdesk.models import User

from . import selectors, services
from .filtersets import ConversationFilter
from .forms import AssignForm, ComposerForm, SavedViewForm, SnoozeForm, mentioned_users, team_choice
from .inbound import InboundAttachment
from .models import (
    Attachment,
    CannedResponse,
    Conversation,
    Notification,
    Priority,
    ReadMarker,
    SavedView,
    Status,
    Tag,
    Team,
)

FILTER_KEYS = ["status", "channel", "priority", "assignee", "team", "tag", "customer", "created_after",
               "created_before", "updated_after", "updated_before", "q", "segment"]


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def url_or_none(name: str, *args) -> str | None:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _safe_next(request, default: str) -> str:
    """The form's `next` if it is a path on this site (no open redirect), else `default`."""
    from django.utils.http import url_has_allowed_host_and_scheme

    nxt = request.POST.get("next") or ""
    if nxt.startswith("/") and url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()},
                                                               require_https=request.is_secure()):
        return nxt
    return default


def _get_conversation(request, pk: int) -> Conversation:
    conversation = selectors.visible_conversation(request.user, pk)
    if conversation is None:
        raise Http404
    return conversation


# --------------------------------------------------------------------------- inbox list

def _filter_params(request) -> QueryDict:
    params = QueryDict(mutable=True)
    for key in FILTER_KEYS:
        values = [v for v in request.GET.getlist(key) if v != ""]
        if values:
            params.setlist(key, values)
    return params


def inbox_page(request):
    """Resolve view + filters + sort + cursor into one keyset page."""
    user = request.user
    params = _filter_params(request)
    view = request.GET.get("view") or ("search" if params.get("q") else "mine")
    base = selectors.view_queryset(user, view, explicit_status=bool(params.getlist("status")))
    if base is None:
        raise Http404
    filterset = ConversationFilter(params, queryset=base, request=request)
    if not filterset.is_valid():
        return None, filterset, view, params
    sort = request.GET.get("sort") or "activity"
    page = selectors.paginate(selectors.list_queryset(filterset.qs), sort=sort, cursor=request.GET.get("cursor"))
    selectors.mark_unread(page.rows, user)
    selectors.sla_due(page.rows)
    return page, filterset, view, params


@login_required
@require_GET
def inbox(request):
    page, filterset, view, params = inbox_page(request)
    sort = request.GET.get("sort") or "activity"
    base_query = params.copy()
    base_query["view"] = view
    if sort != "activity":
        base_query["sort"] = sort
    next_url = None
    if page and page.next_cursor:
        q = base_query.copy()
        q["cursor"] = page.next_cursor
        next_url = reverse("conversations:inbox") + "?" + q.urlencode()
    context = {
        "page": page, "filterset": filterset, "view": view, "sort": sort, "sorts": selectors.SORTS,
        "next_url": next_url, "query": base_query.urlencode(), "filters_active": bool(params),
        "now": timezone.now(),
    }
    if _is_htmx(request) and request.GET.get("cursor"):
        return render(request, "conversations/_rows.html", context)
    if _is_htmx(request) and request.headers.get("HX-Target") == "inbox-list":
        context["partial"] = True  # also swaps the save-view form out of band
        return render(request, "conversations/_list.html", context)
    context.update(_chrome(request, view))
    context.update({
        "teams": Team.objects.all(), "agents": User.objects.filter(is_active=True).order_by("username"),
        "tags": Tag.objects.all()[:200], "statuses": Status.choices, "priorities": Priority.choices,
        "channel_kinds": _channel_kinds(), "params": params, "segments": _segment_choices(),
    })
    return render(request, "conversations/inbox.html", context, status=200 if page else 400)


def _channel_kinds():
    from channels_app.models import ChannelKind

    return ChannelKind.choices


def _segment_choices() -> list[tuple[str, str]]:
    try:
        from metrics import segments
    except ImportError:
        return []
    return [*getattr(segments, "RECENCY_LABELS", {}).items(), *getattr(segments, "VALUE_LABELS", {}).items()]


def _chrome(request, view: str = "") -> dict:
    """What every agent page shows around its content."""
    user = request.user
    return {
        "views": selectors.inbox_views(user),
        "saved_views": list(SavedView.objects.filter(user=user)),
        "unread_notifications": Notification.objects.filter(user=user, read_at__isnull=True).count(),
        "dashboard_url": url_or_none("metrics:dashboard") if user.is_manager else None,
        "current_view": view,
        "availability_choices": User._meta.get_field("availability").choices,
    }


@login_required
@require_POST
def saved_view_create(request):
    form = SavedViewForm(request.POST)
    query = request.POST.get("query", "")[:1000]
    if form.is_valid() and query:
        SavedView.objects.create(user=request.user, name=form.cleaned_data["name"], query=query)
        messages.success(request, _("View saved."))
    else:
        messages.error(request, _("Give the view a name and at least one filter."))
    return redirect(reverse("conversations:inbox") + ("?" + query if query else ""))


@login_required
@require_POST
def saved_view_delete(request, pk: int):
    get_object_or_404(SavedView, pk=pk, user=request.user).delete()
    messages.success(request, _("View deleted."))
    return redirect("conversations:inbox")


# --------------------------------------------------------------------------- bulk

@login_required
@require_POST
def bulk(request):
    ids = [int(i) for i in request.POST.getlist("ids") if i.isdigit()][:200]
    action = request.POST.get("action", "")
    conversations = list(services.conversations_visible_to(request.user).filter(pk__in=ids))
    if not conversations:
        messages.error(request, _("Select at least one conversation."))
        return redirect(_safe_next(request, reverse("conversations:inbox")))
    done = 0
    try:
        with transaction.atomic():
            for conv in conversations:
                _apply_action(request, conv, action, request.POST)
                done += 1
    except (ValueError, ValidationError) as exc:
        messages.error(request, str(exc))
        done = 0
    if done:
        messages.success(request, _("%(count)s conversations updated.") % {"count": done})
    return redirect(_safe_next(request, reverse("conversations:inbox")))


def _apply_action(request, conversation: Conversation, action: str, data) -> None:
    """One action on one conversation, through conversations.services."""
    user = request.user
    if action == "assign":
        form = AssignForm(data)
        form.is_valid()
        agent_value = form.cleaned_data.get("agent", "")
        if agent_value == "me":
            agent = user
        elif agent_value and agent_value.isdigit():
            agent = User.objects.filter(pk=int(agent_value), is_active=True).first()
            if agent is None:
                raise ValueError(_("Unknown agent."))
        else:
            agent = None
        set_team = "team" in data
        team = team_choice(form.cleaned_data.get("team", "")) if set_team else None
        if set_team and form.cleaned_data.get("team") and team is None:
            raise ValueError(_("Unknown team."))
        if "agent" not in data:
            agent = conversation.assignee
        services.assign(conversation=conversation, actor=user, agent=agent, team=team, set_team=set_team)
    elif action == "resolve":
        services.resolve_conversation(conversation=conversation, actor=user)
    elif action == "reopen":
        services.reopen(conversation=conversation, actor=user)
    elif action == "status":
        status = data.get("status", "")
        if status not in Status.values or status == Status.SNOOZED:
            raise ValueError(_("Unknown status."))
        services.set_status(conversation=conversation, status=status, actor=user)
    elif action == "snooze":
        form = SnoozeForm(data)
        if not form.is_valid():
            raise ValueError(_("Pick a date and time to snooze until."))
        until = form.cleaned_data["until"]
        if timezone.is_naive(until):
            until = timezone.make_aware(until)
        services.snooze(conversation=conversation, until=until, actor=user)
    elif action == "priority":
        priority = data.get("priority", "")
        if priority not in Priority.values:
            raise ValueError(_("Unknown priority."))
        services.set_priority(conversation=conversation, priority=priority, actor=user)
    elif action == "tag":
        add = [t for t in re.split(r"[,\n]", data.get("add", "")) if t.strip()]
        remove = data.getlist("remove") if hasattr(data, "getlist") else []
        services.tag(conversation=conversation, add=add, remove=remove, actor=user)
    else:
        raise ValueError(_("Unknown action."))


# --------------------------------------------------------------------------- conversation

@login_required
@require_GET
def conversation_detail(request, pk: int):
    conversation = _get_conversation(request, pk)
    ReadMarker.objects.update_or_create(user=request.user, conversation=conversation,
                                        defaults={"read_at": timezone.now()})
    context = _conversation_context(request, conversation)
    if _is_htmx(request) and request.headers.get("HX-Target") == "timeline":
        return render(request, "conversations/_timeline.html", context)
    context.update(_chrome(request))
    return render(request, "conversations/conversation.html", context)


def _conversation_context(request, conversation: Conversation) -> dict:
    items, truncated = selectors.timeline(conversation)
    # the header's SLA badge on load (afterwards sla.warning / sla.breached pushes update it)
    selectors.sla_due([conversation])
    channels = services.reply_channels(conversation)
    default, reason = services.default_reply_channel(conversation)
    canned = CannedResponse.objects.filter(team__isnull=True) | CannedResponse.objects.filter(
        team__in=request.user.teams.all())
    try:
        from . import presence

        viewers, typing = presence.snapshot(conversation.pk)
    except Exception:  # presence is optional: the page works without it
        viewers, typing = [], []
    viewers = [v for v in viewers if v.get("id") != request.user.pk]
    from customers.views import panel_context

    context = panel_context(request.user, conversation.customer, current=conversation)
    context.update({
        "conversation": conversation, "items": items, "truncated": truncated,
        "reply_channels": channels, "default_channel": default, "default_reason": _reason_text(reason),
        "canned": canned.order_by("title")[:200], "form": ComposerForm(),
        "teams": Team.objects.all(), "agents": User.objects.filter(is_active=True).order_by("username"),
        "statuses": Status.choices, "priorities": Priority.choices, "viewers": viewers,
        "typing": [t for t in typing if t.get("id") != request.user.pk],
        "whatsapp_window": _whatsapp_window(default, conversation),
        "log_call_url": url_or_none("log_call", conversation.pk) or url_or_none("channels_app:log_call",
                                                                               conversation.pk),
        "now": timezone.now(),
    })
    return context


def _whatsapp_window(channel, conversation) -> dict | None:
    """The WhatsApp customer service window (24 h after the customer's last message), if the
    default reply channel is WhatsApp: outside it only approved templates can be sent."""
    if channel is None or channel.kind != "whatsapp":
        return None
    try:
        from channels_app.adapters.whatsapp.adapter import window_closes_at
    except ImportError:
        return None
    closes = window_closes_at(channel, conversation.customer_id)
    if closes is None:
        return None
    return {"closes": closes, "open": closes > timezone.now()}


def _reason_text(reason: dict) -> str:
    """'last wrote on WhatsApp 3 minutes ago' for the composer's channel picker."""
    if not reason:
        return _("The customer has no channel to reply on.")
    from channels_app.models import ChannelKind
    from django.utils.timesince import timesince

    kind = dict(ChannelKind.choices).get(reason.get("kind"), reason.get("kind", ""))
    at = reason.get("at")
    ago = timesince(at) if at else ""
    if reason.get("via") == "email":
        return _("wrote through the %(kind)s %(ago)s ago; answered by email") % {"kind": kind, "ago": ago}
    if ago:
        return _("last wrote on %(kind)s %(ago)s ago") % {"kind": kind, "ago": ago}
    return _("last wrote on %(kind)s") % {"kind": kind}


@login_required
@require_POST
def conversation_reply(request, pk: int):
    conversation = _get_conversation(request, pk)
    form = ComposerForm(request.POST)
    error = None
    if not form.is_valid():
        error = _("Write a message first.")
    else:
        data = form.cleaned_data
        files = request.FILES.getlist("attachments")[:10]
        try:
            if data["kind"] == "note":
                mentions = [u for u in mentioned_users(data["body"]) if u.pk != request.user.pk]
                from .notifications import notify_mentions

                with transaction.atomic():
                    message = services.add_note(conversation=conversation, author=request.user, body=data["body"],
                                                mentions=mentions)
                    for f in files:
                        services.attachment_add(message=message, filename=f.name,
                                                content_type=f.content_type or "application/octet-stream",
                                                content=f.read())
                    notify_mentions(message, mentions, actor=request.user)
                if data["resolve"]:
                    services.resolve_conversation(conversation=conversation, actor=request.user)
            else:
                channel = None
                if data.get("channel"):
                    from channels_app.models import Channel

                    channel = Channel.objects.filter(pk=data["channel"], active=True).first()
                    if channel is None:
                        raise services.NoRecipient(_("That channel is not available."))
                attachments = []
                for f in files:
                    if f.size > settings.ATTACHMENT_MAX_BYTES:
                        raise ValueError(_("%(name)s is larger than the attachment limit.") % {"name": f.name})
                    attachments.append(InboundAttachment(filename=f.name, content=f.read(),
                                                         content_type=f.content_type or "application/octet-stream"))
                services.reply(conversation=conversation, author=request.user, body=data["body"], channel=channel,
                               attachments=attachments, resolve=data["resolve"])
        except (services.NoRecipient, ValueError) as exc:
            error = str(exc)
    if _is_htmx(request):
        conversation = _get_conversation(request, pk)
        context = _conversation_context(request, conversation)
        context["composer_error"] = error
        if not error:
            context["form"] = ComposerForm(initial={"kind": form.cleaned_data.get("kind", "reply")})
        else:
            context["form"] = form
        response = render(request, "conversations/_conversation_main.html", context)
        if not error:
            response["HX-Trigger"] = "threadline:sent"
        return response
    if error:
        messages.error(request, error)
    return redirect("conversations:conversation", pk=pk)


@login_required
@require_POST
def conversation_action(request, pk: int):
    conversation = _get_conversation(request, pk)
    action = request.POST.get("action", "")
    try:
        _apply_action(request, conversation, action, request.POST)
        error = None
    except (ValueError, ValidationError) as exc:
        error = str(exc)
    if _is_htmx(request):
        conversation = selectors.visible_conversation(request.user, pk)
        if conversation is None:  # e.g. moved to a team the agent is not in
            response = HttpResponse(status=204)
            response["HX-Redirect"] = reverse("conversations:inbox")
            return response
        context = _conversation_context(request, conversation)
        context["action_error"] = error
        return render(request, "conversations/_conversation_main.html", context)
    if error:
        messages.error(request, error)
    elif not selectors.visible_conversation(request.user, pk):
        return redirect("conversations:inbox")
    return redirect("conversations:conversation", pk=pk)


# placeholders agents may use in canned responses: a fixed table, never the template engine
PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+(?:\.[a-z_]+)?)\s*\}\}")


def render_placeholders(text: str, *, customer, agent, conversation=None) -> str:
    values = {
        "customer.first_name": customer.first_name if customer else "",
        "customer.name": (customer.name if customer else "") or "",
        "customer.company": (customer.company if customer else "") or "",
        "agent.name": agent.name if agent else "",
        "agent.first_name": (agent.first_name or agent.name) if agent else "",
        "agent.email": agent.email if agent else "",
        "conversation.number": str(conversation.pk) if conversation else "",
        "conversation.subject": conversation.subject if conversation else "",
    }
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


@login_required
@require_GET
def canned_render(request, pk: int, canned_id: int):
    conversation = _get_conversation(request, pk)
    canned = get_object_or_404(CannedResponse, pk=canned_id)
    if canned.team_id and not request.user.sees_all and not request.user.teams.filter(pk=canned.team_id).exists():
        raise Http404
    text = render_placeholders(canned.body, customer=conversation.customer, agent=request.user,
                               conversation=conversation)
    return JsonResponse({"text": text})


# --------------------------------------------------------------------------- notifications & me

@login_required
def notifications(request):
    if request.method == "POST":
        Notification.objects.filter(user=request.user, read_at__isnull=True).update(read_at=timezone.now())
        return redirect("conversations:notifications")
    items = Notification.objects.filter(user=request.user).select_related("actor", "conversation")[:50]
    context = {"notifications": items}
    context.update(_chrome(request))
    return render(request, "conversations/notifications.html", context)


@login_required
@require_POST
def availability(request):
    status = request.POST.get("availability", "")
    try:
        from . import presence

        presence.set_availability(request.user, status)
    except ValueError:
        return HttpResponseBadRequest(_("Unknown availability."))
    if _is_htmx(request):
        return HttpResponse(request.user.get_availability_display())
    return redirect(_safe_next(request, "/"))


# --------------------------------------------------------------------------- attachments

def _visible_attachment(request, pk: int) -> Attachment:
    attachment = get_object_or_404(Attachment.objects.select_related("message"), pk=pk)
    if not services.conversations_visible_to(request.user).filter(pk=attachment.message.conversation_id).exists():
        raise Http404
    return attachment


@login_required
def attachment_download(request, pk: int):
    """Attachments only for users who may see the conversation; always as a download."""
    attachment = _visible_attachment(request, pk)
    try:
        handle = attachment.file.open("rb")
    except FileNotFoundError:
        raise Http404
    response = FileResponse(handle, as_attachment=True, filename=attachment.filename,
                            content_type=attachment.content_type or "application/octet-stream")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


INLINE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


@login_required
def attachment_inline(request, pk: int):
    """Image previews, inline. Raster images only: never HTML or SVG (script)."""
    attachment = _visible_attachment(request, pk)
    if attachment.content_type not in INLINE_TYPES:
        raise Http404
    try:
        handle = attachment.file.open("rb")
    except FileNotFoundError:
        raise Http404
    response = FileResponse(handle, as_attachment=False, filename=attachment.filename,
                            content_type=attachment.content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response
