"""Realistic AppsFlyer Push API payloads (DESIGN.md §8), 0.5-2 KB, unique per sequence."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

SEQ_PLACEHOLDER = "__SEQ__"
_MEDIA = ["Facebook Ads", "googleadwords_int", "organic", "tiktokglobal_int", "unityads_int"]
_COUNTRIES = ["DE", "US", "BR", "IN", "JP", "FR", "GB", "TR"]
_EVENTS = ["af_purchase", "af_level_achieved", "af_tutorial_completion", "af_add_to_cart"]
_UA = (
    "Mozilla/5.0 (Linux; Android 13; SM-S911B Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.163 Mobile Safari/537.36"
)


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _event_time(rng: random.Random) -> str:
    """Up to two minutes before now, as AppsFlyer pushes events soon after they happen
    (so the freshness metrics read as in production), in its fixed-width UTC format."""
    moment = datetime.now(UTC) - timedelta(seconds=rng.uniform(0, 120))
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def make_payload(rng: random.Random, seq: str) -> dict[str, Any]:
    """One event; ``seq`` goes into ``bench_seq`` so every posted event has its own id."""
    android = rng.random() < 0.55
    install = rng.random() < 0.4
    t = _event_time(rng)
    p: dict[str, Any] = {
        "api_version": "2.0",
        "app_id": "com.example.app" if android else "id123456789",
        "platform": "android" if android else "ios",
        "appsflyer_id": f"17{rng.randint(10**10, 10**11)}-{rng.randint(10**6, 10**18)}",
        "customer_user_id": f"user-{rng.randint(1, 10**7)}",
        "event_name": "install" if install else rng.choice(_EVENTS),
        "event_time": t,
        "install_time": t,
        "media_source": rng.choice(_MEDIA),
        "campaign": f"Campaign_{rng.randint(1, 500)}_{rng.choice(['UA', 'RT', 'Brand'])}",
        "af_adset": f"adset_{rng.randint(1, 9999)}",
        "af_ad": f"creative_{rng.randint(1, 99999)}_video_15s",
        "conversion_type": "install",
        "campaign_type": "ua",
        "is_retargeting": rng.random() < 0.1,
        "country_code": rng.choice(_COUNTRIES),
        "city": rng.choice(["Berlin", "Austin", "Sao Paulo", "Pune", "Osaka"]),
        "ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "wifi": rng.random() < 0.6,
        "language": rng.choice(["en-US", "de-DE", "pt-BR", "ja-JP"]),
        "device_model": rng.choice(["SM-S911B", "iPhone15,2", "Pixel 8", "iPhone14,5"]),
        "os_version": rng.choice(["13", "14", "17.2", "16.6"]),
        "app_version": f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        "sdk_version": "v6.12.2",
        "bench_seq": seq,
    }
    if android:
        p["advertising_id"] = _uuid(rng)
        p["android_id"] = f"{rng.getrandbits(64):016x}"
        p["user_agent"] = _UA
    else:
        p["idfa"] = _uuid(rng)
        p["idfv"] = _uuid(rng).upper()
    if not install:
        revenue = f"{rng.choice([0.99, 1.99, 4.99, 9.99, 19.99])}"
        value: dict[str, Any] = {
            "af_revenue": revenue,
            "af_currency": "USD",
            "af_content_id": f"sku_{rng.randint(1, 5000)}",
            "af_quantity": rng.randint(1, 3),
        }
        if rng.random() < 0.5:  # pad some in-app events towards 2 KB
            value["items"] = [
                {"id": f"item_{rng.randint(1, 10**6)}", "price": revenue, "tags": ["a", "b"]}
                for _ in range(rng.randint(1, 8))
            ]
        p["event_value"] = json.dumps(value, separators=(",", ":"))
        p["event_revenue"] = revenue
        p["event_revenue_currency"] = "USD"
        p["event_revenue_usd"] = revenue
    return p


def templates(count: int, seed: int = 7) -> list[str]:
    """``count`` JSON bodies holding ``SEQ_PLACEHOLDER`` where the sequence number goes."""
    rng = random.Random(seed)
    return [json.dumps(make_payload(rng, SEQ_PLACEHOLDER)) for _ in range(count)]
