from django.urls import path

from . import views

app_name = "conversations"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("c/<int:pk>/", views.conversation_detail, name="conversation"),
    path("c/<int:pk>/reply/", views.conversation_reply, name="reply"),
    path("c/<int:pk>/action/", views.conversation_action, name="action"),
    path("c/<int:pk>/canned/<int:canned_id>/", views.canned_render, name="canned_render"),
    path("bulk/", views.bulk, name="bulk"),
    path("views/save/", views.saved_view_create, name="saved_view_create"),
    path("views/<int:pk>/delete/", views.saved_view_delete, name="saved_view_delete"),
    path("notifications/", views.notifications, name="notifications"),
    path("me/availability/", views.availability, name="availability"),
    path("attachments/<int:pk>/", views.attachment_download, name="attachment"),
    path("attachments/<int:pk>/inline/", views.attachment_inline, name="attachment_inline"),
]
