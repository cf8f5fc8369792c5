"""A local OpenAI: `POST /v1/chat/completions` answered with one canned reply and its usage, so the real `openai`
client, wrapped by a real instrumentation, makes a real call that an app would make. Not a vendor shipper ships to."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from tests.support import free_port

REPLY = "4"
MODEL = "gpt-4o-mini-2024-07-18"
USAGE = {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}


class OpenAIFake:
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Any] = []
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
            "usage": USAGE,
        })  # fmt: skip

    async def __aenter__(self) -> OpenAIFake:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
