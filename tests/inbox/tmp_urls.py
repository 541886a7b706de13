from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("channels_app.urls")),
    path("", include("customers.urls")),
    path("", include("helpdesk.admin_views")),
    path("", include("conversations.urls")),
]
