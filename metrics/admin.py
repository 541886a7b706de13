from django.contrib import admin

from .models import BusinessHours, ImportJob, SlaPolicy, SurveyInvitation


@admin.register(SurveyInvitation)
class SurveyInvitationAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "conversation", "channel_kind", "score", "invited_at", "answered_at")
    list_filter = ("kind", "channel_kind")
    search_fields = ("comment", "external_id")
    raw_id_fields = ("conversation", "customer", "agent", "team")
    exclude = ("token",)  # the customer's link: not shown


@admin.register(BusinessHours)
class BusinessHoursAdmin(admin.ModelAdmin):
    list_display = ("team", "timezone")


@admin.register(SlaPolicy)
class SlaPolicyAdmin(admin.ModelAdmin):
    list_display = ("priority", "first_response_seconds", "resolution_seconds", "business_hours", "active")


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "status_code", "created_at")
    readonly_fields = ("idempotency_key", "user", "status_code", "result", "created_at")
