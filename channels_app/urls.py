from django.urls import path

from . import views

app_name = "channels_app"

urlpatterns = [
    path("hooks/<str:kind>/<uuid:uuid>/", views.hook, name="hook"),
]
