"""Device channel: DDM sync for Macs (NanoMDM-compatible) and status ingestion."""
