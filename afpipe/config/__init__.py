"""Settings: the environment contract (``contract``), read and checked once
(``environment``, ``checks``)."""

from afpipe.config.contract import HELP, SECRET_SETTINGS, Settings
from afpipe.config.environment import (
    defaults,
    load,
    parse_dotenv,
    read_environment,
    redacted,
    setting_names,
    settings_from,
)

__all__ = [
    "HELP",
    "SECRET_SETTINGS",
    "Settings",
    "defaults",
    "load",
    "parse_dotenv",
    "read_environment",
    "redacted",
    "setting_names",
    "settings_from",
]
