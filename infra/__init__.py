"""Local stack: pinned jars, a KRaft Kafka broker and a standalone Flink cluster on 127.0.0.1."""
