"""Public pages: the /support/ contact form, the customer portal reached by a
signed magic link, the signed media URL Twilio fetches outbound MMS from, and
the agents' "log a call" form."""
from __future__ import annotations

import json
import logging

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.cache import cache
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from channels_app.models import Channel
from channels_app.services import envelope_process, envelope_reject, envelope_store
from conversations import services as conv_services
from conversations.models import Attachment, Conversation, Direction
from customers.models import Identity

from .forms import LogCallForm, PortalLinkForm, PortalReplyForm, SupportForm

log = logging.getLogger(__name__)

PORTAL_SALT = "threadline.portal"
from ..sms.adapter import MEDIA_SALT  # noqa: E402  (one salt for signing and checking)


def portal_max_age() -> int:
    return int(getattr(settings, "PORTAL_LINK_MAX_AGE", 14 * 24 * 3600))


# --------------------------------------------------------------------------- helpers

def client_ip(request) -> str:
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):  # BEHIND_PROXY: our proxy appends the client
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def rate_limited(key: str, limit: int, period: int = 3600) -> bool:
    """Count one hit against `key`; True once more than `limit` hits fell in the period."""
    cache.add(key, 0, period)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, period)
        count = 1
    return count > limit


def language_for(customer=None, request=None) -> str:
    codes = {code for code, _name in settings.LANGUAGES}
    for lang in ((customer.language if customer else ""), translation.get_language() or ""):
        lang = (lang or "").lower()
        for candidate in (lang, lang.split("-")[0]):
            if candidate in codes:
                return candidate
    return settings.LANGUAGE_CODE


def _private(response):
    response["Cache-Control"] = "no-store"
    response["X-Robots-Tag"] = "noindex, nofollow"
    # same-origin: the token never leaves in a Referer, and form posts keep their Origin (CSRF)
    response["Referrer-Policy"] = "same-origin"
    return response


def webform_channel(uuid=None) -> Channel:
    qs = Channel.objects.filter(kind="webform", active=True)
    channel = qs.filter(uuid=uuid).first() if uuid else qs.order_by("pk").first()
    if channel is None:
        raise Http404("No web form is configured.")
    return channel


def portal_token(email: str) -> str:
    return signing.dumps({"e": email.strip().lower()}, salt=PORTAL_SALT, compress=True)


def portal_url(email: str) -> str:
    return settings.PUBLIC_URL + reverse("channels_app:portal_home", kwargs={"token": portal_token(email)})


def send_portal_mail(*, template: str, email: str, customer, lang: str, channel: Channel | None,
                     conversation: Conversation | None = None) -> None:
    """Mail the customer a magic link to the portal, in their language."""
    with translation.override(lang):
        context = {"customer": customer, "conversation": conversation, "portal_url": portal_url(email),
                   "days": portal_max_age() // 86400, "LANGUAGE_CODE": lang}
        subject = render_to_string(f"support/email/{template}_subject.txt", context).strip()
        text = render_to_string(f"support/email/{template}.txt", context)
        html = render_to_string(f"support/email/{template}.html", context)
    sender = (channel.get("address") if channel else "") or settings.DEFAULT_FROM_EMAIL
    mail = EmailMultiAlternatives(subject=" ".join(subject.split()), body=text, from_email=sender, to=[email],
                                  headers={"Auto-Submitted": "auto-generated", "Content-Language": lang})
    mail.attach_alternative(html, "text/html")
    try:
        mail.send()
    except Exception:  # the case exists either way; the customer can request a new link
        log.exception("could not send the %s mail for conversation %s", template, getattr(conversation, "pk", None))


# --------------------------------------------------------------------------- /support/

@require_http_methods(["GET", "POST"])
def support(request, uuid=None):
    channel = webform_channel(uuid)
    lang = language_for(None, request)
    form = SupportForm(channel=channel)
    status = 200
    if request.method == "POST":
        limit = int(channel.get("rate_limit", 5) or 5)
        if rate_limited(f"webform:rl:{channel.pk}:{client_ip(request)}", limit):
            form = SupportForm(request.POST, channel=channel)
            form.is_valid()
            form.add_error(None, _("Too many messages from your network in the last hour. "
                                   "Please try again later or write us an email."))
            return render(request, "support/form.html", {"form": form, "channel": channel}, status=429)
        form = SupportForm(request.POST, request.FILES, channel=channel)
        if form.is_valid():
            return _accept_submission(request, channel, form, lang)
        status = 400
    return render(request, "support/form.html", {"form": form, "channel": channel}, status=status)


def _accept_submission(request, channel, form, lang):
    data = form.cleaned_data
    payload = {"type": "form", "name": data["name"], "email": data["email"], "subject": data.get("subject", ""),
               "message": data["message"], "language": lang, "honeypot": data.get("website", ""),
               "attachments": form.attachment_payload()}
    envelope = envelope_store(channel=channel, kind="webform", body=json.dumps(payload).encode(), source="form",
                              headers={"User-Agent": request.headers.get("User-Agent", "")[:300],
                                       "Accept-Language": request.headers.get("Accept-Language", "")[:100]},
                              remote_addr=request.META.get("REMOTE_ADDR"))
    if data.get("website"):
        # a bot: keep the evidence, create nothing, and do not tell it
        envelope_reject(envelope, "honeypot field filled")
        log.info("web form honeypot hit from %s (envelope %s)", client_ip(request), envelope.pk)
        return render(request, "support/thanks.html", {"channel": channel, "email": data["email"]})
    try:
        result = envelope_process(envelope)
    except Exception:
        log.exception("web form envelope %s failed; kept for replay", envelope.pk)
        return render(request, "support/thanks.html", {"channel": channel, "email": data["email"], "delayed": True})
    ingested = result.messages[0].meta["_result"]
    conversation = ingested.message.conversation
    customer = conversation.customer
    mail_lang = language_for(customer, request)
    transaction.on_commit(lambda: send_portal_mail(template="confirmation", email=data["email"], customer=customer,
                                                   lang=mail_lang, channel=channel, conversation=conversation))
    return render(request, "support/thanks.html", {"channel": channel, "email": data["email"],
                                                   "conversation": conversation})


# --------------------------------------------------------------------------- portal

class PortalError(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def portal_customer(token: str):
    """(customer, email) for a valid link; PortalError("expired"/"invalid") otherwise."""
    try:
        data = signing.loads(token, salt=PORTAL_SALT, max_age=portal_max_age())
    except signing.SignatureExpired:
        raise PortalError("expired")
    except signing.BadSignature:
        raise PortalError("invalid")
    email = str((data or {}).get("e") or "")
    ident = Identity.objects.filter(kind="email", value=email).select_related("customer").first()
    if ident is None:
        raise PortalError("invalid")
    return ident.customer, email


def _portal_error(request, reason: str):
    status = 410 if reason == "expired" else 400
    return _private(render(request, "portal/error.html", {"reason": reason, "form": PortalLinkForm()}, status=status))


def _with_customer(view):
    def wrapper(request, token, *args, **kwargs):
        try:
            customer, email = portal_customer(token)
        except PortalError as exc:
            return _portal_error(request, exc.reason)
        with translation.override(language_for(customer, request)):
            response = view(request, token, customer, email, *args, **kwargs)
            response["Content-Language"] = translation.get_language()
        return _private(response)

    wrapper.__name__ = view.__name__
    return wrapper


def public_messages(conversation: Conversation):
    """What the customer may see: their messages and our replies, never notes."""
    return (conversation.messages.filter(direction__in=[Direction.INBOUND, Direction.OUTBOUND])
            .select_related("channel").prefetch_related("attachments").order_by("created_at", "id"))


@require_http_methods(["GET", "POST"])
def portal_request(request):
    """Ask for a new magic link (the old one expired, or the mail was lost)."""
    form = PortalLinkForm(request.POST or None)
    if request.method == "POST":
        if rate_limited(f"portal:link:{client_ip(request)}", 5):
            form.add_error(None, _("Too many requests. Please try again later."))
            return _private(render(request, "portal/request.html", {"form": form}, status=429))
        if form.is_valid():
            email = form.cleaned_data["email"].strip().lower()
            ident = Identity.objects.filter(kind="email", value=email).select_related("customer").first()
            if ident is not None:  # the answer is the same either way: no account probing
                channel = Channel.objects.filter(kind="webform", active=True).order_by("pk").first()
                send_portal_mail(template="link", email=email, customer=ident.customer,
                                 lang=language_for(ident.customer, request), channel=channel)
            return _private(render(request, "portal/link_sent.html", {"email": email}))
    return _private(render(request, "portal/request.html", {"form": form}))


@require_http_methods(["GET"])
@_with_customer
def portal_home(request, token, customer, email):
    conversations = (Conversation.objects.filter(customer=customer)
                     .order_by("-last_message_at", "-id"))
    return render(request, "portal/list.html", {"token": token, "customer": customer,
                                                "conversations": conversations})


@require_http_methods(["GET", "POST"])
@_with_customer
def portal_conversation(request, token, customer, email, pk):
    conversation = get_object_or_404(Conversation, pk=pk, customer=customer)
    form = PortalReplyForm(channel=None)
    status = 200
    if request.method == "POST":
        channel = Channel.objects.filter(kind="webform", active=True).order_by("pk").first()
        if channel is None:
            raise Http404("No web form is configured.")
        form = PortalReplyForm(request.POST, request.FILES, channel=channel)
        if rate_limited(f"portal:reply:{customer.pk}", int(channel.get("portal_rate_limit", 30) or 30)):
            form.add_error(None, _("Too many messages in the last hour. Please try again later."))
            status = 429
        elif form.is_valid():
            payload = {"type": "portal_reply", "email": email, "reply_token": conversation.reply_token,
                       "conversation": conversation.pk, "message": form.cleaned_data["message"],
                       "language": translation.get_language(), "attachments": form.attachment_payload()}
            envelope = envelope_store(channel=channel, kind="webform", body=json.dumps(payload).encode(),
                                      source="portal", remote_addr=request.META.get("REMOTE_ADDR"),
                                      headers={"User-Agent": request.headers.get("User-Agent", "")[:300]})
            try:
                result = envelope_process(envelope)
                target = result.messages[0].meta["_result"].message.conversation_id
            except Exception:
                log.exception("portal reply envelope %s failed; kept for replay", envelope.pk)
                target = conversation.pk
            url = reverse("channels_app:portal_conversation", kwargs={"token": token, "pk": target})
            return HttpResponseRedirect(url + "?sent=1#latest")
        else:
            status = 400
    return render(request, "portal/conversation.html", {
        "token": token, "customer": customer, "conversation": conversation, "form": form,
        "messages_list": public_messages(conversation), "sent": request.GET.get("sent") == "1",
    }, status=status)


@require_http_methods(["GET"])
@_with_customer
def portal_attachment(request, token, customer, email, pk):
    att = get_object_or_404(Attachment.objects.select_related("message__conversation"), pk=pk,
                            message__conversation__customer=customer,
                            message__direction__in=[Direction.INBOUND, Direction.OUTBOUND])
    return _file_response(att)


def _file_response(att: Attachment):
    try:
        handle = att.file.open("rb")
    except FileNotFoundError:
        raise Http404("The file is gone.")
    response = FileResponse(handle, as_attachment=not att.is_image, filename=att.filename,
                            content_type=att.content_type if att.is_image else "application/octet-stream")
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@require_http_methods(["GET", "HEAD"])
def public_media(request, token):
    """An outbound attachment for Twilio to fetch (MediaUrl), by a signed link valid one day."""
    try:
        data = signing.loads(token, salt=MEDIA_SALT, max_age=24 * 3600)
    except signing.BadSignature:
        raise Http404("Unknown media.")
    att = get_object_or_404(Attachment, pk=(data or {}).get("a"), message__direction=Direction.OUTBOUND)
    return _private(_file_response(att))


# --------------------------------------------------------------------------- agents: log a call

def _conversation_page(conversation) -> str:
    from django.urls import NoReverseMatch

    try:
        return reverse("conversations:conversation", kwargs={"pk": conversation.pk})
    except NoReverseMatch:
        return "/"


@login_required
@require_http_methods(["GET", "POST"])
def log_call(request, pk):
    conversation = get_object_or_404(conv_services.conversations_visible_to(request.user).select_related("customer"),
                                     pk=pk)
    wants_json = ("application/json" in request.headers.get("Accept", "")
                  or request.headers.get("X-Requested-With") == "XMLHttpRequest")
    form = LogCallForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                message = conv_services.log_call(
                    conversation=conversation, author=request.user, direction=data["direction"],
                    duration_seconds=data["duration"], outcome=data["outcome"], summary=data["summary"],
                    at=data.get("at"))
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                if wants_json:
                    return JsonResponse({"message": message.pk, "conversation": conversation.pk,
                                         "call": message.meta.get("call")}, status=201)
                target = request.POST.get("next") or request.GET.get("next") or ""
                if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
                    target = _conversation_page(conversation)
                return HttpResponseRedirect(target)
        if wants_json:
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
        return render(request, "phone/log_call.html", {"form": form, "conversation": conversation,
                                                       "next": request.POST.get("next", "")}, status=400)
    return render(request, "phone/log_call.html", {"form": form, "conversation": conversation,
                                                   "next": request.GET.get("next", "")})
