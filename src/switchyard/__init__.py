"""switchyard: caption tasks on database polling, Redis Queue, or both, moved between them
without losing or duplicating a task. See docs/architecture.md."""
