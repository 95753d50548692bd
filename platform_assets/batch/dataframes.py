"""The DataFrame API a frame belongs to: PySpark's, or SQLFrame's (PySpark's API over DuckDB).

The batch transformations are PySpark DataFrame code. Their column expressions (``F.col``,
``Window``) must come from the library of the frame they apply to, so each transformation asks its
input for them instead of importing ``pyspark.sql.functions``: one code runs on a SparkSession and
on a SQLFrame DuckDBSession, side by side in one process (``sqlframe.activate`` would instead swap
the ``pyspark`` modules for the whole process).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def api(frame) -> tuple[ModuleType, type]:
    """``(functions, Window)`` for ``frame``: ``pyspark.sql``'s or its SQLFrame engine's."""
    module = type(frame).__module__
    if module.startswith("sqlframe."):
        package = module.rsplit(".", 1)[0]  # e.g. sqlframe.duckdb
        return importlib.import_module(f"{package}.functions"), importlib.import_module(package).Window
    from pyspark.sql import Window, functions

    return functions, Window
