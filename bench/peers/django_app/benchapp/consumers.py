"""The seed's consumer: greeting on connect, 我正在思考你的问题{...} per text, group "users" broadcasts."""

import json

from channels.generic.websocket import AsyncWebsocketConsumer

GREETING = json.dumps({"msg": "你好,很高兴为你服务。", "talk": False}, ensure_ascii=False)


class EchoConsumer(AsyncWebsocketConsumer):
    """Same behaviour as bench/raw_server.py, written the Django Channels way."""

    async def connect(self):
        await self.channel_layer.group_add("users", self.channel_name)
        await self.accept()
        await self.send(text_data=GREETING)

    async def disconnect(self, code):
        await self.channel_layer.group_discard("users", self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        text = json.loads(text_data).get("text", "")
        await self.send(
            text_data=json.dumps({"msg": f"我正在思考你的问题{{{text}}}", "talk": True}, ensure_ascii=False)
        )

    async def chat_broadcast(self, event):
        await self.send(
            text_data=json.dumps({"type": "system", "msg": event["text"], "talk": False}, ensure_ascii=False)
        )
