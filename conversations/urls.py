from django.urls import path

from . import views

app_name = "conversations"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("attachments/<int:pk>/", views.attachment_download, name="attachment"),
]
