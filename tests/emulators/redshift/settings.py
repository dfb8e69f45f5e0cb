"""Fixed settings of one emulator instance (runtime knobs live in faults.py)."""

from __future__ import annotations

from dataclasses import dataclass

TEST_ACCESS_KEY = "AKIDAFPIPETEST000001"
TEST_SECRET_KEY = "afpipe-test-secret-key-not-a-real-one"
TEST_REGION = "us-east-1"
TEST_CLUSTER = "afpipe-test"
TEST_WORKGROUP = "afpipe-test-wg"
TEST_DATABASE = "dev"
TEST_DB_USER = "afpipe"
TEST_SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:afpipe-test-AbCdEf"

# Settings.isolation -> the level's name in STV_DB_ISOLATION_LEVEL.
ISOLATION_LEVELS = {"snapshot": "Snapshot Isolation", "serializable": "Serializable"}
# Settings.batch_limit: how the 100 KB limit applies to the texts of one
# BatchExecuteStatement. AWS documents it per text, not whether they also count together.
BATCH_LIMITS = ("total", "per_text")


@dataclass(frozen=True, slots=True)
class Settings:
    access_key: str = TEST_ACCESS_KEY
    secret_key: str = TEST_SECRET_KEY
    session_token: str | None = None  # when set, requests must carry it
    region: str | None = None  # None: any region in the credential scope
    clusters: frozenset[str] | None = None  # None: any cluster identifier exists
    workgroups: frozenset[str] | None = None
    databases: frozenset[str] | None = None
    max_sql_bytes: int = 100_000  # the Data API's limit on one SQL text
    # "total": all the texts of one batch together within max_sql_bytes (what the
    # emulator always did); "per_text": each text within it, up to 40 texts (the
    # model's limit). Either way a call too large answers the same ValidationException.
    batch_limit: str = "total"
    result_page_rows: int = 1_000  # GetStatementResult page size (then NextToken)
    wlm_slots: int = 8  # statements running at once; the rest wait as PICKED
    max_retained_statements: int = 100_000
    database_path: str | None = None  # DuckDB file; None keeps it in memory
    seed: int | None = None  # for the injected-error dice
    # COPY ... FROM 's3://...' reads from this S3 endpoint (moto in the test suite);
    # None: every COPY fails with an S3ServiceException.
    s3_endpoint_url: str | None = None
    s3_access_key: str | None = None  # None: access_key
    s3_secret_key: str | None = None  # None: secret_key
    s3_session_token: str | None = None
    s3_region: str = TEST_REGION  # the cluster's region: a COPY without REGION reads there
    # The database's isolation level: "snapshot" (the default of Serverless workgroups
    # and new clusters: concurrent writers of one table both commit) or "serializable"
    # (the later of two conflicting writers fails with error 1023). See locks.py.
    isolation: str = "snapshot"

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATION_LEVELS:
            raise ValueError(
                f"isolation must be one of {sorted(ISOLATION_LEVELS)}, not {self.isolation!r}"
            )
        if self.batch_limit not in BATCH_LIMITS:
            raise ValueError(
                f"batch_limit must be one of {list(BATCH_LIMITS)}, not {self.batch_limit!r}"
            )
