from django.urls import path, re_path

from . import views

urlpatterns = [
    re_path(r"^metrics(?:\.(?P<format>csv|json))?/?$", views.MetricsView.as_view(), name="api-metrics"),
    path("imports/", views.ImportView.as_view(), name="api-imports"),
]
