"""AWS credentials: botocore's provider chain, resolved and refreshed off the event loop.

Resolving the chain and refreshing temporary credentials can block on the
network (IMDS, the ECS endpoint, STS for web identity), so both run in a worker
thread. Between refreshes every call reuses the cached frozen credentials;
deciding whether a refresh is due is a cheap, non-blocking check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import botocore.exceptions
import botocore.session
import trio
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials

from afpipe.errors import ConfigError, TransientError

logger = logging.getLogger("afpipe.aws")

CredentialLoader = Callable[[], Credentials | None]
"""Blocking: returns the credential source, or None when there is none."""

_CONFIG_ERRORS = (
    botocore.exceptions.ProfileNotFound,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.InvalidConfigError,
)


def default_chain() -> Credentials | None:
    """botocore's chain: env, web identity, shared files, ECS endpoint, EC2 IMDS..."""
    return botocore.session.get_session().get_credentials()


def static_credentials(
    access_key: str, secret_key: str, token: str | None = None
) -> CredentialLoader:
    credentials = Credentials(access_key, secret_key, token, method="explicit")
    return lambda: credentials


class CredentialCache:
    """Frozen credentials for signing; one refresh at a time, always in a thread."""

    def __init__(self, load: CredentialLoader = default_chain) -> None:
        self._load = load
        self._source: Credentials | None = None
        self._frozen: ReadOnlyCredentials | None = None
        self._lock = trio.Lock()
        # Bumped by invalidate(): a resolve that began before it brings back
        # credentials that may be the very ones AWS just refused.
        self._generation = 0

    def _refresh_due(self) -> bool:
        """Cheap and non-blocking: botocore compares the expiry time with the clock."""
        source = self._source
        return isinstance(source, RefreshableCredentials) and source.refresh_needed()

    async def get(self) -> ReadOnlyCredentials:
        frozen = self._frozen
        if frozen is None or self._refresh_due():
            async with self._lock:
                frozen = self._frozen  # another task may have refreshed while we waited
                if frozen is None or self._refresh_due():
                    frozen = await self._resolve_current()
        return frozen

    async def _resolve_current(self) -> ReadOnlyCredentials:
        """Resolve (or refresh) in a thread; again if invalidated meanwhile."""
        while True:
            generation = self._generation
            source, frozen = await trio.to_thread.run_sync(
                self._resolve, self._source, abandon_on_cancel=True
            )
            if generation == self._generation:  # the state changes only here, on trio's thread
                self._source, self._frozen = source, frozen
                return frozen

    def invalidate(self) -> None:
        """AWS said our credentials expired: resolve the whole chain again next time."""
        self._source = None
        self._frozen = None
        self._generation += 1

    def _resolve(
        self, source: Credentials | None
    ) -> tuple[Credentials, ReadOnlyCredentials]:  # runs in a worker thread
        try:
            if source is None:
                source = self._load()
                if source is None:
                    raise ConfigError("no AWS credentials found (env, profile, IRSA, ECS, IMDS)")
                logger.info("AWS credentials from %s", source.method)
            return source, source.get_frozen_credentials()
        except _CONFIG_ERRORS as exc:
            raise ConfigError(f"AWS credentials: {exc}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise TransientError(f"AWS credentials: {exc}", code=type(exc).__name__) from exc
