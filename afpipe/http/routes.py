"""The HTTP routes, declared once: path -> methods.

The webhook's ASGI front (``webhook``), the Quart app (``app``) and the
observer's route labels (``observer``) all read this table. Paths, methods and
their order (``/api/hello`` lists them) are the old Node.js/Fastify service's.
"""

from __future__ import annotations

HEALTH = "/health"
READY = "/ready"
METRICS = "/metrics"
HELLO = "/api/hello"
WEBHOOK = "/webhook/appsflyer"

# The webhook is the bare ASGI handler's; every other route is Quart's.
ROUTES: dict[str, tuple[str, ...]] = {
    HEALTH: ("GET",),
    READY: ("GET",),
    METRICS: ("GET",),
    HELLO: ("GET",),
    WEBHOOK: ("GET", "POST"),
}


def allow(path: str) -> str:
    """The ``Allow`` header a 405 on ``path`` carries."""
    return ", ".join(ROUTES[path])
