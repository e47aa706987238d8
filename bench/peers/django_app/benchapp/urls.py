"""POST /bench/broadcast: group_send to "users" (bench only, no auth)."""

import json

from channels.layers import get_channel_layer
from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
async def broadcast(request):
    text = json.loads(request.body).get("text", "")
    await get_channel_layer().group_send("users", {"type": "chat.broadcast", "text": text})
    return HttpResponse("ok")


urlpatterns = [path("bench/broadcast", broadcast)]
