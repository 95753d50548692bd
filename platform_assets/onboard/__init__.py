"""Onboarding: a catalogue folder (source, feature set, model) drafted from one data file.

    python -m platform_assets.onboard FILE --name NAME [--target COLUMN] [--out DIR]   (or `make onboard`)
"""
