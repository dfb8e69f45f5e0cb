"""afpipe: AppsFlyer Push API -> queue -> Redshift, on trio."""

__version__ = "0.1.0"
