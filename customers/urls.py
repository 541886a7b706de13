from django.urls import path

from . import views

app_name = "customers"

urlpatterns = [
    path("customers/<int:pk>/", views.customer_detail, name="detail"),
    path("customers/<int:pk>/edit/", views.customer_edit, name="edit"),
    path("customers/<int:pk>/duplicates/", views.customer_duplicates, name="duplicates"),
    path("customers/<int:pk>/merge/", views.customer_merge, name="merge"),
    path("customers/suggestions/<int:pk>/dismiss/", views.suggestion_dismiss, name="suggestion_dismiss"),
]
