"""The database engine: schema, connection set-up and the task store (system of record)."""
