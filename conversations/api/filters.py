"""The API's conversation filters: conversations.filtersets.ConversationFilter
(shared with the inbox), with datetime ranges normalized to UTC so any valid
ISO 8601 offset is accepted (PostgreSQL rejects offsets beyond ±15:59)."""
from __future__ import annotations

from conversations.filtersets import ConversationFilter
from helpdesk.api.filters import UTCIsoDateTimeFilter


class ApiConversationFilter(ConversationFilter):
    created_after = UTCIsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="Created after")
    created_before = UTCIsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Created before")
    updated_after = UTCIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte", label="Updated after")
    updated_before = UTCIsoDateTimeFilter(field_name="updated_at", lookup_expr="lt", label="Updated before")

    class Meta(ConversationFilter.Meta):
        pass
