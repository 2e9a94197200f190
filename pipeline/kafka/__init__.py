"""Kafka plumbing shared by every stage and producer: the batch runner with poison
isolation, lanes, topic admin, the one producer path and its alert screen. May import
`pipeline.analysis` (the bounded decoder), `pipeline.router` (error kinds), config,
telemetry and `schemas` (see README.md)."""
