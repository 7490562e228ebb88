"""Fleet simulator: Macs that speak DDM over HTTP, apply update enforcements and report status
as a Mac does. Used by `managed-os simulate`, end-to-end tests and benchmarks."""
