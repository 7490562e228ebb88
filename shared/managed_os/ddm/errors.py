"""Errors of the DDM protocol layer. Plain `ValueError`s: the service maps them to HTTP."""

from __future__ import annotations


class DDMProtocolError(ValueError):
    """Bytes from a device (or the MDM server) that do not have the shape Apple's schema
    describes: malformed JSON or plist, a missing key, a value of the wrong type. The message
    says which key was wrong and why, so it can be returned to the client as is."""


class InvalidDeclaration(ValueError):
    """A declaration the server was about to build would be refused by the device, e.g. a
    `TargetOSVersion` carrying a BSI letter."""
