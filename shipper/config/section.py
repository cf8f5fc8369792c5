"""What every table of the configuration is: frozen once loaded, and strict about its keys.

A module of its own because every section's module builds on it and none of them should import another for it.
Not responsible for any key (the section modules) or for loading (shipper/config/__init__.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # A misspelt key is refused, not silently ignored; a loaded config never changes under a running daemon.
    model_config = ConfigDict(extra="forbid", frozen=True)
