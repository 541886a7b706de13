"""The ceiling for bench/webhooks.py: the same Django project (settings,
middleware, database) whose only URL is a view that inserts one row.
Run: uvicorn bench.bare_asgi:application (from the repository root)."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

from channels_app.models import InboundEnvelope  # noqa: E402


@csrf_exempt
def bare(request):
    InboundEnvelope.objects.create(kind="bench", source="bench", body=request.body, headers={})
    return HttpResponse('<?xml version="1.0" encoding="UTF-8"?><Response/>', content_type="text/xml")


def healthz(request):
    return HttpResponse("ok")


urlpatterns = [path("bare/", bare), path("healthz", healthz)]
settings.ROOT_URLCONF = __name__
application = get_asgi_application()
