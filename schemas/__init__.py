"""The usage-event contract: Avro schemas, the typed event, validation, serde and producers."""
