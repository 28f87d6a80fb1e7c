"""Protocol: qwend's configuration: the schema, loading, watching and live reload.

schema.py   the TOML files parsed and validated into typed objects (``load_config``)
watch.py    the watchdog observer that notices edits to the user's file
reload.py   applying a changed file to the running daemon (or keeping the last good one)

The package exports the schema; watch and reload are imported by the daemon only.
"""

from qwend.config.schema import (
    Config,
    ModelProfile,
    Settings,
    TaskSettings,
    load_config,
)

__all__ = ["Config", "ModelProfile", "Settings", "TaskSettings", "load_config"]
