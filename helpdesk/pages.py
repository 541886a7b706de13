"""Settings pages for integrators: API tokens and webhook subscriptions (with the delivery log)."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from . import webhooks
from .models import WEBHOOK_EVENTS, ApiToken, WebhookSubscription
from .tokens import token_create, token_revoke


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request):
    new_key = None
    if request.method == "POST":
        name = (request.POST.get("name") or "").strip() or "default"
        _token, new_key = token_create(user=request.user, name=name)
    items = ApiToken.objects.filter(user=request.user).order_by("-created_at")
    return render(request, "helpdesk/tokens.html", {"tokens": items, "new_key": new_key})


@login_required
@require_POST
def token_revoke_view(request, pk: int):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    token_revoke(token=token)
    messages.success(request, _("Token %(prefix)s… revoked.") % {"prefix": token.prefix})
    return redirect("helpdesk:tokens")


def _subscriptions(user):
    qs = WebhookSubscription.objects.select_related("owner")
    return qs if user.is_admin_role else qs.filter(owner=user)


@login_required
@require_http_methods(["GET", "POST"])
def webhook_list(request):
    errors, form, new_secret = {}, {}, None
    if request.method == "POST":
        form = {"name": request.POST.get("name", ""), "url": request.POST.get("url", "").strip(),
                "events": request.POST.getlist("events")}
        try:
            sub = webhooks.subscription_create(owner=request.user, **form)
        except webhooks.InvalidSubscription as exc:
            errors[exc.field] = exc.message
        else:
            new_secret = sub.secret
            form = {}
    return render(request, "helpdesk/webhooks.html", {
        "subscriptions": _subscriptions(request.user).order_by("-created_at"), "events": WEBHOOK_EVENTS,
        "errors": errors, "form": form, "new_secret": new_secret})


@login_required
@require_http_methods(["GET", "POST"])
def webhook_detail(request, pk: int):
    sub = _subscriptions(request.user).filter(pk=pk).first()
    if sub is None:
        raise Http404
    new_secret = None
    if request.method == "POST":
        op = request.POST.get("op")
        if op == "enable":
            webhooks.subscription_update(subscription=sub, active=True)
        elif op == "disable":
            webhooks.subscription_update(subscription=sub, active=False)
        elif op == "rotate":
            new_secret = webhooks.subscription_rotate_secret(subscription=sub).secret
        elif op == "ping":
            webhooks.emit_test(sub)
            messages.success(request, _("Test event queued."))
        elif op == "delete":
            webhooks.subscription_delete(subscription=sub)
            return redirect("helpdesk:webhooks")
        if new_secret is None:
            return redirect("helpdesk:webhook", pk=sub.pk)
    page = Paginator(sub.deliveries.order_by("-created_at", "-id"), 50).get_page(request.GET.get("page"))
    return render(request, "helpdesk/webhook_detail.html", {"sub": sub, "page": page, "new_secret": new_secret})
