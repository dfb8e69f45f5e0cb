"""The Redshift warehouse: the Data API client, SQL, COPY staging, and their errors."""

from afpipe.warehouse.redshift.copy import Staging
from afpipe.warehouse.redshift.session import Target
from afpipe.warehouse.redshift.staging import Stager
from afpipe.warehouse.redshift.warehouse import RedshiftWarehouse

__all__ = ["RedshiftWarehouse", "Stager", "Staging", "Target"]
