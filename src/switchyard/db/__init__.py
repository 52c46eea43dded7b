"""The database: schema, connection set-up and the task store (system of record)."""
