"""Shared test configuration; fixtures live in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.moto",
    "tests.fixtures.s3",
    "tests.fixtures.redshift",
    "tests.fixtures.common",
]
