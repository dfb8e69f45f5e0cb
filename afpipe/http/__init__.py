"""HTTP ingest: the webhook (bare ASGI) and the other routes (Quart) on hypercorn."""
