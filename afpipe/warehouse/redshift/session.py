"""Where statements run and as whom (``Target``), and the Data API sessions that
keep one connection across calls (``Session``)."""

from __future__ import annotations

import math

import msgspec
import trio

from afpipe.errors import ConfigError


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """Where statements run and as whom.

    Provisioned: ``cluster_identifier`` with ``db_user`` (temporary credentials),
    ``secret_arn``, or neither (the caller's IAM identity). Serverless:
    ``workgroup_name`` with ``secret_arn`` or neither (IAM).
    """

    database: str
    cluster_identifier: str = ""
    workgroup_name: str = ""
    db_user: str = ""
    secret_arn: str = ""

    def __post_init__(self) -> None:
        if bool(self.cluster_identifier) == bool(self.workgroup_name):
            raise ConfigError("Redshift: set a cluster identifier or a workgroup name (one)")
        if self.db_user and (self.secret_arn or self.workgroup_name):
            raise ConfigError("Redshift: a database user goes with a cluster and no secret")
        if not self.database:
            raise ConfigError("Redshift: the database name is empty")

    def request_fields(self) -> dict[str, str]:
        fields = {
            "ClusterIdentifier": self.cluster_identifier,
            "WorkgroupName": self.workgroup_name,
            "Database": self.database,
            "DbUser": self.db_user,
            "SecretArn": self.secret_arn,
        }
        return {name: value for name, value in fields.items() if value}


class Session:
    """A Data API session, used by one task at a time: its first call opens it
    (``SessionKeepAliveSeconds``), later calls name it (``SessionId``) and so share
    its connection and temp tables. The service closes it ``keep_alive_s`` after
    its last statement ended; ``usable`` leaves a quarter of that as margin, so a
    call never meets a session closed for idleness. ``fresh`` until a call opened it."""

    def __init__(self, keep_alive_s: int) -> None:
        if not 1 <= keep_alive_s <= 86_400:  # the model's range; 0 closes it at once
            raise ValueError("a session's keep-alive is 1..86400 seconds")
        self.keep_alive_s = keep_alive_s
        self.id = ""  # the service's, from the first call's answer
        self._usable_until = -math.inf

    @property
    def fresh(self) -> bool:
        return not self.id

    def usable(self) -> bool:
        return self.fresh or trio.current_time() < self._usable_until

    def ended(self) -> None:
        """A statement in it ended now (or a little earlier: that is the margin)."""
        self._usable_until = trio.current_time() + 0.75 * self.keep_alive_s
