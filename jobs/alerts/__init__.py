"""Threshold alerts from the job's topics: evaluator.py (state and step), service.py (Kafka, exactly once), webhooks.py."""
