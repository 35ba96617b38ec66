"""What runs inside Flink: the metering job's graph, its SQL stages, the connector smoke job, its counters."""
