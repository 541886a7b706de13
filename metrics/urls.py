from django.urls import path

from . import views

app_name = "metrics"
urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/segments/", views.segments, name="segments"),
    path("dashboard/export/<slug:table>.csv", views.dashboard_csv, name="dashboard-csv"),
    path("dashboard/service-levels/", views.service_levels, name="service-levels"),
    path("dashboard/service-levels/hours/<int:team_id>/", views.business_hours_edit, name="business-hours"),
    path("dashboard/service-levels/sla/new/", views.sla_edit, name="sla-new"),
    path("dashboard/service-levels/sla/<int:pk>/", views.sla_edit, name="sla-edit"),
    path("survey/<str:token>/", views.survey, name="survey"),
]
