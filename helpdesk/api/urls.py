"""/api/v1/ routes, collected from every app's api package; the integrator settings pages."""
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from helpdesk import pages

settings_patterns = ([
    path("settings/api-tokens/", pages.tokens, name="tokens"),
    path("settings/api-tokens/<int:pk>/revoke/", pages.token_revoke_view, name="token-revoke"),
    path("settings/webhooks/", pages.webhook_list, name="webhooks"),
    path("settings/webhooks/<int:pk>/", pages.webhook_detail, name="webhook"),
], "helpdesk")

urlpatterns = [
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("helpdesk.api.v1")),
    path("", include(settings_patterns)),
]
