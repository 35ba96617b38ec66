"""The HTTP ingestion API (``metering serve``, docs/ingest.md): events over HTTP, a verdict each, into Kafka.

bodies.py turns a request body into events, app.py judges them (schemas/validate.py, the job's
definition) and answers once Kafka has acknowledged the accepted ones (kafka.py), keys.py holds the
API keys, limits.py their token buckets, metrics.py the Prometheus metrics, openapi.py the OpenAPI
document, server.py the HTTP server and its graceful stop. amend.py voids and amends events
(amendment records, schemas/amendments.py) through the same keys, limits and producer.
"""
