"""The v1 API: the shared router plus the metrics/import routes."""
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from channels_app.api.views import ChannelViewSet
from conversations.api.views import AttachmentViewSet, ConversationViewSet
from customers.api.views import CustomerViewSet, OrderViewSet

from .people import AgentViewSet, TeamViewSet
from .surveys import SurveyResponseViewSet
from .webhooks import WebhookDeliveryViewSet, WebhookSubscriptionViewSet

router = DefaultRouter()
router.register("customers", CustomerViewSet, basename="api-customer")
router.register("orders", OrderViewSet, basename="api-order")
router.register("conversations", ConversationViewSet, basename="api-conversation")
router.register("attachments", AttachmentViewSet, basename="api-attachment")
router.register("channels", ChannelViewSet, basename="api-channel")
router.register("teams", TeamViewSet, basename="api-team")
router.register("agents", AgentViewSet, basename="api-agent")
router.register("survey-responses", SurveyResponseViewSet, basename="api-survey-response")
router.register("webhook-subscriptions", WebhookSubscriptionViewSet, basename="api-webhook-subscription")
router.register("webhook-deliveries", WebhookDeliveryViewSet, basename="api-webhook-delivery")

urlpatterns = [
    path("", include("metrics.api.urls")),
    *router.urls,
]
