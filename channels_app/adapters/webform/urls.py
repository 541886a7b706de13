"""Public routes of the web form area, included at the site root (namespace channels_app)."""
from django.urls import path

from . import views

urlpatterns = [
    path("support/", views.support, name="support"),
    path("support/<uuid:uuid>/", views.support, name="support_channel"),
    path("portal/", views.portal_request, name="portal_request"),
    path("portal/<str:token>/", views.portal_home, name="portal_home"),
    path("portal/<str:token>/c/<int:pk>/", views.portal_conversation, name="portal_conversation"),
    path("portal/<str:token>/attachments/<int:pk>/", views.portal_attachment, name="portal_attachment"),
    path("media/twilio/<str:token>/", views.public_media, name="public_media"),
    # agents: log a call in a conversation (linked from the inbox)
    path("conversations/<int:pk>/log-call/", views.log_call, name="log_call"),
]
