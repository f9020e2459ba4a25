"""The wire contract (msgspec Structs, JSON Schema) and the ClickHouse DDL of trainguard."""
