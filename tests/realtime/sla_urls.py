"""The agent test pages plus an endpoint that runs the SLA notice task inside
the test server (the in-memory channel layer only delivers on the server's
own event loop). Test URLs only."""
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .agent_page_urls import urlpatterns as agent_urlpatterns


@csrf_exempt  # test page only
@login_required
@require_POST
def run_sla_notices(request):
    from metrics import sla_tasks

    return JsonResponse({"published": sla_tasks.run()})


urlpatterns = [path("test-sla/run/", run_sla_notices), *agent_urlpatterns]
