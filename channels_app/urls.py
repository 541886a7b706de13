from django.urls import include, path

from . import views

app_name = "channels_app"

urlpatterns = [
    path("hooks/<str:kind>/<uuid:uuid>/", views.hook, name="hook"),
    # per-area public routes, each owned by its adapter package
    path("", include("channels_app.adapters.email.urls")),
    path("", include("channels_app.adapters.chat.urls")),
    path("", include("channels_app.adapters.webform.urls")),
]
