"""The customer panel (issue 6): one profile across channels, edit in place,
merge with a preview, likely duplicates.

A customer is visible to an agent who can see at least one of its
conversations (managers, admins and access_all agents see every customer);
anything else is a 404, like conversations."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from conversations.forms import CustomerEditForm
from conversations.services import conversations_visible_to

from . import services
from .models import Customer, Identity, MergeSuggestion, Order


def visible_customers(user):
    if user.sees_all:
        return Customer.objects.all()
    return Customer.objects.filter(pk__in=conversations_visible_to(user).values("customer_id"))


def _get_customer(request, pk: int) -> Customer:
    customer = visible_customers(request.user).filter(pk=pk).first()
    if customer is None:
        raise Http404
    return customer


def segment_of(customer):
    """metrics.segments.segment_for(customer) if the metrics engineer provides it."""
    try:
        from metrics import segments  # type: ignore
    except ImportError:
        return None
    fn = getattr(segments, "segment_for", None)
    if fn is None:
        return None
    try:
        return fn(customer)
    except Exception:
        return None


def csat_history(customer, limit: int = 10) -> list:
    try:
        from metrics.models import SurveyInvitation
    except ImportError:  # pragma: no cover
        return []
    return list(SurveyInvitation.objects.filter(customer=customer).order_by("-invited_at")[:limit])


def panel_context(user, customer: Customer, *, current=None) -> dict:
    """Everything the customer panel shows (used by the conversation page too)."""
    orders = Order.objects.filter(customer=customer)
    totals = list(orders.values("currency").annotate(total=Sum("amount"), count=Count("id")).order_by("currency"))
    conversations = (conversations_visible_to(user).filter(customer=customer)
                     .order_by("-last_message_at", "-id"))
    if current is not None:
        conversations = conversations.exclude(pk=current.pk)
    return {
        "customer": customer,
        "identities": list(Identity.objects.filter(customer=customer).order_by("kind", "created_at")),
        "attributes": sorted((customer.attributes or {}).items()),
        "segment": segment_of(customer),
        "orders": list(orders.order_by("-placed_at")[:5]),
        "lifetime": totals,
        "surveys": csat_history(customer),
        "previous": list(conversations[:20]),
        "current": current,
    }


@login_required
@require_GET
def customer_detail(request, pk: int):
    from conversations.views import _chrome

    customer = _get_customer(request, pk)
    context = panel_context(request.user, customer)
    context["edit_form"] = _edit_form(customer)
    context.update(_chrome(request))
    return render(request, "customers/detail.html", context)


def _edit_form(customer: Customer) -> CustomerEditForm:
    attrs = "\n".join(f"{k} = {v}" for k, v in sorted((customer.attributes or {}).items()))
    return CustomerEditForm(initial={"name": customer.name, "company": customer.company,
                                     "language": customer.language, "attributes": attrs})


@login_required
def customer_edit(request, pk: int):
    """Edit in place: GET returns the form fragment, POST saves and returns the panel fragment."""
    customer = _get_customer(request, pk)
    htmx = request.headers.get("HX-Request") == "true"
    if request.method == "POST":
        form = CustomerEditForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            services.customer_update(customer=customer, name=data["name"], company=data["company"],
                                     language=data["language"], attributes=data["attributes"])
            if htmx:
                return render(request, "customers/_profile.html",
                              panel_context(request.user, customer) | {"editable": True})
            messages.success(request, _("Customer saved."))
            return redirect("customers:detail", pk=pk)
    else:
        form = _edit_form(customer)
    template = "customers/_edit.html" if htmx else "customers/edit_page.html"
    return render(request, template, {"customer": customer, "form": form},
                  status=400 if request.method == "POST" else 200)


@login_required
@require_GET
def customer_duplicates(request, pk: int):
    """Merge suggestions, then likely duplicates: same name (same company first)."""
    customer = _get_customer(request, pk)
    visible = visible_customers(request.user)
    suggestions = (MergeSuggestion.objects.filter(Q(customer=customer) | Q(other=customer), dismissed_at__isnull=True)
                   .select_related("customer", "other")[:10])
    suggested = []
    for s in suggestions:
        other = s.other if s.customer_id == customer.pk else s.customer
        if visible.filter(pk=other.pk).exists():
            suggested.append((s, other))
    seen = {o.pk for _s, o in suggested} | {customer.pk}
    likely = []
    if customer.name.strip():
        for other in visible.filter(name__iexact=customer.name.strip()).exclude(pk__in=seen)[:10]:
            likely.append(other)
        likely.sort(key=lambda o: (o.company.lower() != customer.company.lower(), o.pk))
    return render(request, "customers/_duplicates.html",
                  {"customer": customer, "suggested": suggested, "likely": likely[:5]})


@login_required
@require_POST
def suggestion_dismiss(request, pk: int):
    suggestion = get_object_or_404(MergeSuggestion, pk=pk)
    customer = _get_customer(request, suggestion.customer_id)
    MergeSuggestion.objects.filter(pk=suggestion.pk).update(dismissed_at=timezone.now())
    messages.success(request, _("Suggestion dismissed."))
    return redirect("customers:detail", pk=customer.pk)


def merge_preview(survivor: Customer, merged: Customer) -> dict:
    """What customer_merge will produce, computed without writing (mirrors its rules:
    the survivor keeps its values, blanks are filled from the merged customer)."""
    def pick(field):
        return getattr(survivor, field) or getattr(merged, field)

    identities = list(Identity.objects.filter(customer__in=[survivor, merged]).order_by("kind", "value"))
    from conversations.models import Conversation

    conv_count = Conversation.objects.filter(customer__in=[survivor, merged]).count()
    orders = Order.objects.filter(customer__in=[survivor, merged])
    return {
        "name": pick("name"), "company": pick("company"), "language": pick("language"),
        "attributes": sorted({**(merged.attributes or {}), **(survivor.attributes or {})}.items()),
        "identities": identities,
        "conversations": conv_count,
        "orders": orders.count(),
        "lifetime": list(orders.values("currency").annotate(total=Sum("amount")).order_by("currency")),
        "first_seen_at": min(survivor.first_seen_at, merged.first_seen_at),
    }


def _find_other(request, customer: Customer, query: str) -> Customer | None:
    query = (query or "").strip().lstrip("#")
    visible = visible_customers(request.user).exclude(pk=customer.pk)
    if query.isdigit():
        return visible.filter(pk=int(query)).first()
    if query:
        ident = Identity.objects.filter(value__iexact=query).first()
        if ident:
            return visible.filter(pk=ident.customer_id).first()
    return None


@login_required
def customer_merge(request, pk: int):
    """GET ?other=<id, email or phone>: preview; POST other=<id>: merge `other` into this customer."""
    from conversations.views import _chrome

    customer = _get_customer(request, pk)
    query = request.POST.get("other") if request.method == "POST" else request.GET.get("other", "")
    other = _find_other(request, customer, query or "")
    if request.method == "POST":
        if other is None:
            messages.error(request, _("Pick the customer to merge into this one."))
            return redirect("customers:merge", pk=pk)
        survivor, merged = customer, other
        if request.POST.get("keep") == "other":
            survivor, merged = other, customer
        with transaction.atomic():
            services.customer_merge(survivor=survivor, merged=merged, actor=request.user,
                                    reason=_("merged by %(agent)s") % {"agent": request.user.name})
        messages.success(request, _("Customers merged."))
        return redirect("customers:detail", pk=survivor.pk)
    context = {"customer": customer, "other": other, "query": query or "",
               "not_found": bool(query) and other is None}
    if other is not None:
        context["preview"] = merge_preview(customer, other)
        context["preview_other"] = merge_preview(other, customer)
    context.update(_chrome(request))
    return render(request, "customers/merge.html", context)
