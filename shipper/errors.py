"""The one root of shipper's own exceptions, so callers can tell our failures from library ones."""


class ShipperError(Exception):
    """Base of every error shipper raises on purpose."""


class ConfigError(ShipperError):
    """The configuration cannot be used; the message names the key."""


class SpoolError(ShipperError):
    """The spool cannot be opened, locked or written."""


class SpoolFull(SpoolError):
    """The spool reached its configured bound ([spool] max_bytes / max_rows with when_full = "reject")."""


class LargerThanSpool(SpoolError):
    """One request holds more than the whole bound ([spool] max_bytes / max_rows): it can never be taken."""


class DiskFull(SpoolError):
    """The filesystem under the spool has no space left; writes resume by themselves when space returns."""
