"""A minimal agent page for the browser test: realtime.js plus a list of the
events it dispatches (the real inbox is built in parallel; this page tests the
realtime.js contract alone). Added to the site's URLs for the test only."""
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>agent</title></head><body>
<p id="state">-</p><ul id="events"></ul>
<script src="/static/js/realtime.js"></script>
<script>
  function add(kind, text) { var li = document.createElement("li"); li.className = kind; li.textContent = text;
    document.getElementById("events").appendChild(li); }
  ["conversation.created", "message.created"].forEach(function (name) {
    document.addEventListener("threadline:" + name, function (e) {
      add(name, e.detail.conversation.id + ":" + e.detail.message.direction + ":" + e.detail.message.text); }); });
  ThreadlineRealtime.on("conversation.created", function (p) { ThreadlineRealtime.view(p.conversation.id); });
  ThreadlineRealtime.on("message.status", function (p) { add("status", p.message.id + ":" + p.message.delivery_status); });
  document.addEventListener("threadline:state", function (e) { document.getElementById("state").textContent = e.detail.state; });
</script></body></html>"""


@login_required
def agent_page(request):
    return HttpResponse(PAGE)


@csrf_exempt  # test page only
@login_required
@require_POST
def agent_reply(request, pk):
    from conversations import services

    conversation = get_object_or_404(services.conversations_visible_to(request.user), pk=pk)
    message = services.reply(conversation=conversation, author=request.user, body=request.POST["body"])
    return JsonResponse({"id": message.pk})


urlpatterns = [
    path("test-agent/", agent_page),
    path("test-agent/reply/<int:pk>/", agent_reply),
    path("", include("helpdesk.urls")),
]
