"""ferbench: facial expression recognition model zoo, benchmark bench and live mode."""

__version__ = "0.1.0"
