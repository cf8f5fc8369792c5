"""The one root of shipper's own exceptions, so callers can tell our failures from library ones."""


class ShipperError(Exception):
    """Base of every error shipper raises on purpose."""


class ConfigError(ShipperError):
    """The configuration cannot be used; the message names the key."""


class SpoolError(ShipperError):
    """The spool cannot be opened, locked or written."""
