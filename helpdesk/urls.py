"""Root URLs. Each area keeps its own urls module."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("django-admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("channels_app.urls")),
    path("", include("helpdesk.api.urls")),
    path("", include("metrics.urls")),
    path("", include("customers.urls")),
    path("", include("helpdesk.admin_views")),
    path("", include("conversations.urls")),
]
