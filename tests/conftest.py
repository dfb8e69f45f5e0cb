"""Shared test configuration; fixtures live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.moto", "tests.fixtures.redshift", "tests.fixtures.common"]
