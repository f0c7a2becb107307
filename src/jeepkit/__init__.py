"""jeepkit: a reproducible replication of JEEP (AAAI 2025) and its knowledge-editing baselines."""

__version__ = "0.1.0"
