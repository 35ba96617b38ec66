"""The loader: the job's Kafka topics into ClickHouse, and the heartbeats that keep quiet topics moving."""
