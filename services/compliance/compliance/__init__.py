"""Compliance service: who is up to date, pending, overdue or failing."""
