"""Events holding characters SQS refuses, posted beside the load by concurrent clients.

SQS refuses a whole call for one character outside its set (U+FFFE, U+FFFF...);
afpipe packs many requests into one message, so such an event must be queued
escaped, acknowledged and stored byte-exact, and never fail the requests packed
with it. A lone surrogate is not Unicode text and cannot be stored: 400, alone.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import trio

from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.events import from_payload

HOOK = "/webhook/appsflyer"
HOSTILE_TEXT = "\ufffe|\uffff|\U0010ffff|\ud7ff\ue000\ufffd"


def hostile_event(tag: str) -> dict[str, Any]:
    return {
        "app_id": "id-faults",
        "event_name": f"hostile-{tag}\ufffe",
        "event_time": "2024-03-02 12:00:01.123",
        "idfv": f"{tag}\uffff",
        "note \ufffe": HOSTILE_TEXT,
        "event_value": json.dumps({"text": HOSTILE_TEXT}, ensure_ascii=False),
    }


@dataclass
class HostilePoster:
    """Posts hostile events every way a client can: raw UTF-8, ``\\u`` escapes, GET."""

    url: str
    run_id: str
    clients: int = 3
    rounds: int = 10
    acked: set[str] = field(default_factory=set)
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> payload
    statuses: Counter[str] = field(default_factory=Counter)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for client in range(self.clients):
                nursery.start_soon(self._client, client)

    async def _client(self, client: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=15) as http:
            for n in range(self.rounds):
                tag = f"{self.run_id}-{client}-{n}"
                await self._post_raw(http, hostile_event(f"{tag}-raw"))
                await self._post_escaped(http, hostile_event(f"{tag}-esc"))
                await self._get(http, hostile_event(f"{tag}-get"))
                await self._lone_surrogate(http, tag)
                await trio.sleep(0.05)

    async def _post_raw(self, http: httpx.AsyncClient, payload: dict[str, Any]) -> None:
        content = json.dumps(payload, ensure_ascii=False).encode()
        await self._send(http, "raw", payload, http.post(HOOK, content=content))

    async def _post_escaped(self, http: httpx.AsyncClient, payload: dict[str, Any]) -> None:
        content = json.dumps(payload, ensure_ascii=True).encode()  # "\ufffe" escapes
        await self._send(http, "escaped", payload, http.post(HOOK, content=content))

    async def _get(self, http: httpx.AsyncClient, payload: dict[str, Any]) -> None:
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in payload.items())
        await self._send(http, "get", payload, http.get(f"{HOOK}?{query}"))

    async def _send(self, http: httpx.AsyncClient, kind: str, payload: Any, request: Any) -> None:
        event_id = from_payload(payload).id
        self.sent[event_id] = payload
        try:
            response = await request
        except httpx.TransportError:
            self.statuses[f"{kind}: no answer"] += 1
            return
        self.statuses[f"{kind}: {response.status_code}"] += 1
        if response.status_code == 200:
            self.acked.add(response.json()["eventId"])

    async def _lone_surrogate(self, http: httpx.AsyncClient, tag: str) -> None:
        content = b'{"event_name":"lone-' + tag.encode() + b'","x":"\\ud800"}'
        response = await http.post(HOOK, content=content)
        self.statuses[f"lone surrogate: {response.status_code}"] += 1


def mismatched_rows(emu: RedshiftDataEmulator, expected: dict[str, dict[str, Any]]) -> list[str]:
    """Ids of ``expected`` whose stored event_data is not exactly their payload."""
    rows = emu.query("SELECT id, event_data FROM public.appsflyer_events")
    stored = {str(r[0]): r[1] for r in rows if str(r[0]) in expected}
    bad = []
    for event_id, payload in expected.items():
        data = stored.get(event_id)
        value = json.loads(data) if isinstance(data, str) else data
        if value != payload:
            bad.append(event_id)
    return bad
