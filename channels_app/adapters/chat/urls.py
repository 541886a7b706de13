"""Public routes of the live chat widget (included at the site root)."""
from django.urls import path

from . import views

urlpatterns = [
    path("widget/widget.js", views.widget_js, name="chat_widget_js"),
    path("widget/widget.css", views.widget_css, name="chat_widget_css"),
    path("widget/demo/<uuid:uuid>/", views.demo, name="chat_widget_demo"),
    path("widget/<uuid:uuid>/upload/", views.upload, name="chat_widget_upload"),
    path("widget/a/<str:token>/", views.attachment, name="chat_widget_attachment"),
]
