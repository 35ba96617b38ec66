"""Operating the metering job on a Flink session cluster: submit, status, savepoints, upgrades."""
