"""Sensors: Kafka streams into micro-batch runs."""
