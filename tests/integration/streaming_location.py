"""A code location with only the streaming definitions of the catalogue in PLATFORM_STREAMS_FILE.

The continuous-mode tests run a real daemon and webserver on it: the same builders as
platform_assets/definitions.py, without the batch and ML assets (whose automation would start runs
of their own during the test).
"""

import dagster as dg

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.config import load_streams
from tests.integration.streaming_harness import streaming_definitions

defs: dg.Definitions = streaming_definitions(load_streams(load_catalogue()))
