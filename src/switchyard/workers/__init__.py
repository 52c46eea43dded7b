"""The worker processes, both engines side by side: `polling` (the database-polling worker),
`rq` (rq's worker classes, mode-aware), the `supervisor` thread beside either (Redis health,
fallback, dispatch through the switch, the registry and the epoch it acts under), and the one
`runner` that starts them (`switchyard worker --engine db|rq|auto`).
"""
