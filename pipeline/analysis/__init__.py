"""The security analysis itself, free of Kafka: an alert normalized, its entities and
severity, ATT&CK lookups, storm keys, the prompt, the verdict and its checks, embeddings
and runbooks. May import `pipeline.store`, `pipeline.router`, `pipeline.config` and
`schemas` — never Kafka plumbing or entry points (see README.md)."""
