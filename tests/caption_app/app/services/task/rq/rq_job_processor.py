"""The id-only caption app's job function, at the path the real app enqueues it from.

Tests put `tests/caption_app` on sys.path and enqueue this function with real rq (pickle, rq's
default serializer), so the job hash holds exactly what the app's own producer writes: the
function's dotted path and one positional argument, the app's task id.
"""


def process_caption_task(task_id: str) -> None:
    raise RuntimeError("the caption app's worker runs this, never switchyard")
