"""kamigate: order ingestion for shops that sell secret codes."""

__version__ = "0.1.0"
