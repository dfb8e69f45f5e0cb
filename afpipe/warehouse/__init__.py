"""The warehouse seam: Redshift through the Data API, or an SQLite file."""

from afpipe.warehouse.base import LoadResult, Warehouse

__all__ = ["LoadResult", "Warehouse"]
