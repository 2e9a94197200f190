"""Where alerts come from and where verdicts go back to Wazuh: `secanalyst ingest FILE`,
tail, backfill and the Wazuh write-back. Entry-point layer: may import kafka, analysis,
config (see README.md)."""
