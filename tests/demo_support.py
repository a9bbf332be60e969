"""Driving ``leadbot demo`` the way its page does: through the page's own HTTP endpoints."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class PageClient:
    """One person on the demo page: sends text, presses buttons, reads their chat (as the page does)."""

    http: httpx.AsyncClient
    chat_id: int

    async def messages(self) -> list[dict[str, Any]]:
        response = await self.http.get("/demo/api/changes", params={"since": 0})
        response.raise_for_status()
        found = [m for m in response.json()["messages"] if m["chat_id"] == self.chat_id and not m["deleted"]]
        return sorted(found, key=lambda m: m["message_id"])

    async def alerts(self) -> list[dict[str, Any]]:
        response = await self.http.get("/demo/api/changes", params={"since": 0})
        return [a for a in response.json()["alerts"] if a["chat_id"] == self.chat_id]

    async def say(self, text: str, *, expect: str | None = None) -> dict[str, Any]:
        """Type ``text``; the bot's next message (or the first one with ``expect``) in this chat."""
        mark = await self._last_id()
        response = await self.http.post(f"/demo/api/chat/{self.chat_id}/send", json={"text": text})
        response.raise_for_status()
        return await self.wait_for(expect, after=mark)

    async def press(self, caption: str, *, expect: str | None = None) -> dict[str, Any]:
        """Press the button whose caption has ``caption`` on the newest message showing one; then wait
        for a message (new or edited) with ``expect``."""
        for message in reversed(await self.messages()):
            for row in message["keyboard"]:
                for button in row:
                    if caption.casefold() in button["text"].casefold() and "callback_data" in button:
                        rev = await self._rev()
                        response = await self.http.post(
                            f"/demo/api/chat/{self.chat_id}/press",
                            json={"message_id": message["message_id"], "data": button["callback_data"]},
                        )
                        response.raise_for_status()
                        return await self.wait_for(expect, since_rev=rev)
        raise AssertionError(f"no button {caption!r} in chat {self.chat_id}")

    async def wait_for(
        self, expect: str | None, *, after: int = 0, since_rev: int = 0, within: float = 15.0
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            for message in await self.messages():
                if not message["from_bot"] or message["message_id"] <= after or message["rev"] <= since_rev:
                    continue
                if expect is None or expect.casefold() in _text(message).casefold():
                    return message
            if asyncio.get_running_loop().time() > deadline:
                seen = [_text(m)[:80] for m in (await self.messages())[-5:]]
                raise AssertionError(f"chat {self.chat_id}: no message {expect!r}; last: {seen}")
            await asyncio.sleep(0.05)

    async def _last_id(self) -> int:
        messages = await self.messages()
        return messages[-1]["message_id"] if messages else 0

    async def _rev(self) -> int:
        response = await self.http.get("/demo/api/changes", params={"since": 10**9})
        return int(response.json()["rev"])


def _text(message: dict[str, Any]) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", message["html"]))


def buttons(message: dict[str, Any]) -> list[str]:
    return [button["text"] for row in message["keyboard"] for button in row]
