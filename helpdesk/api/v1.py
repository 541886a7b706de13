"""The v1 API: the shared router plus the metrics/import routes."""
from django.urls import include, path
from rest_framework.routers import DefaultRouter

router = DefaultRouter()

urlpatterns = [
    path("", include("metrics.api.urls")),
    *router.urls,
]
