"""Declarations service: Managed OS policies compiled into versioned DDM declarations."""
