"""Deterministic demo data for the six sources of ``platform_assets/sources.yaml``.

``generate`` builds the frames (pure, seeded); ``write`` puts them where the sources read them;
``rest_api`` serves the site register; ``python -m platform_assets.demo_data`` does it all.
"""

from platform_assets.demo_data.generate import DemoData, generate_fleet

__all__ = ["DemoData", "generate_fleet"]
