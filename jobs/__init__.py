"""Flink jobs and the `metering` command line."""
