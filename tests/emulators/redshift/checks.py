"""Checks beyond the service model: target combinations, SQL size, parameters."""

from __future__ import annotations

from typing import Any

from tests.emulators.redshift.errors import ApiError, validation_error
from tests.emulators.redshift.settings import Settings
from tests.emulators.redshift.statements import Target
from tests.emulators.redshift.translate import referenced_parameters

# What a session fixes when it opens (sessions.py), so a call in it names none.
_FIXED_BY_SESSION = ("ClusterIdentifier", "WorkgroupName", "Database", "DbUser", "SecretArn")


def check_unsupported(params: dict[str, Any]) -> None:
    """Data API options the emulator does not model: failing loudly beats silently
    ignoring them."""
    if params.get("ResultFormat", "JSON") != "JSON":
        raise validation_error("emulator: only ResultFormat JSON is supported")
    if params.get("ExecutionMode", "TRANSACTION") != "TRANSACTION":
        raise validation_error("emulator: only ExecutionMode TRANSACTION is supported")


def target(params: dict[str, Any], settings: Settings) -> Target:
    """The cluster or workgroup and the credentials, combined as the API allows:
    cluster + (DbUser | SecretArn | IAM identity), workgroup + (SecretArn | IAM)."""
    found = Target(
        cluster_identifier=params.get("ClusterIdentifier"),
        workgroup_name=params.get("WorkgroupName"),
        database=params.get("Database"),
        db_user=params.get("DbUser"),
        secret_arn=params.get("SecretArn"),
    )
    cluster, workgroup = found.cluster_identifier, found.workgroup_name
    if cluster and workgroup:
        raise validation_error("Either ClusterIdentifier or WorkgroupName must be set, not both.")
    if not cluster and not workgroup:
        raise validation_error("Either ClusterIdentifier or WorkgroupName must be set.")
    if found.db_user and found.secret_arn:
        raise validation_error("Either DbUser or SecretArn must be set, not both.")
    if workgroup and found.db_user:
        raise validation_error("DbUser is not supported for a serverless workgroup.")
    if not found.secret_arn and not found.database:
        raise validation_error(
            "Database must be set when authenticating with temporary credentials."
        )
    _check_exists(cluster, settings.clusters)
    _check_exists(workgroup, settings.workgroups)
    return found


def no_target_in_session(params: dict[str, Any]) -> None:
    """A call with SessionId names no target or credentials: the session fixed them
    when it opened. The service's documentation lists the combinations of these
    members without SessionId and says nothing of them with it; the emulator takes
    the strict reading and refuses any of them."""
    given = [name for name in _FIXED_BY_SESSION if name in params]
    if given:
        raise validation_error(
            f"emulator: {', '.join(given)} cannot be given with SessionId; "
            "the session's target and credentials are those it was opened with"
        )


def _check_exists(name: str | None, known: frozenset[str] | None) -> None:
    if name is not None and known is not None and name not in known:
        raise validation_error("Redshift endpoint doesn't exist in this region.")


def check_sql_sizes(sqls: list[str], settings: Settings) -> None:
    """The 100 KB limit: on each text, and with ``batch_limit`` "total" on all the
    texts of a call together. The service answers both with the same text."""
    sizes = [len(sql.encode()) for sql in sqls]
    too_large = any(size > settings.max_sql_bytes for size in sizes)
    if settings.batch_limit == "total" and sum(sizes) > settings.max_sql_bytes:
        too_large = True
    if too_large:
        raise validation_error("Cannot process query string larger than 100kB")


def parameters(params: dict[str, Any], sql: str) -> dict[str, str] | None:
    """Parameters by name. Values were checked against the model (strings of at
    least one character: no NULL, no empty string). Every placeholder must be
    supplied and every supplied parameter used."""
    given: list[dict[str, str]] | None = params.get("Parameters")
    if given is None:
        return None
    names = [p["name"] for p in given]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise validation_error(f"Duplicate parameter names: {', '.join(duplicates)}")
    used = referenced_parameters(sql)
    if used is not None:
        missing, unused = sorted(used - set(names)), sorted(set(names) - used)
        if missing:
            raise validation_error(f"Parameters missing for placeholders: {', '.join(missing)}")
        if unused:
            raise validation_error(f"Parameters not used in the SQL: {', '.join(unused)}")
    return {p["name"]: p["value"] for p in given}


def active_statements(active: int, limit: int | None) -> None:
    if limit is not None and active >= limit:
        raise ApiError(
            "ActiveStatementsExceededException",
            f"Active statements exceeded the allowed quota ({limit}).",
        )
