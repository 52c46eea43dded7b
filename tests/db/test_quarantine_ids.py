"""The quarantine's job_id column must never merge two different rq job ids."""

from switchyard.db.quarantine import MAX_JOB_ID, decode_raw, encode_raw, storable_job_id


def test_long_ids_sharing_a_prefix_stay_distinct_and_fit() -> None:
    first, second = "j" * 300 + "-a", "j" * 300 + "-b"
    a, b = storable_job_id(first), storable_job_id(second)
    assert a != b
    assert len(a) <= MAX_JOB_ID and len(b) <= MAX_JOB_ID
    assert storable_job_id(first) == a  # stable, so a rerun recognises the row


def test_odd_bytes_and_lookalike_ids_never_collide() -> None:
    odd = b"\xff\xfejob".decode("utf-8", "surrogateescape")
    assert storable_job_id(odd).startswith("b64:")
    digest = storable_job_id("x" * 400)
    assert storable_job_id(digest) != digest  # a plain id that looks like a digest is encoded
    assert storable_job_id("plain-id") == "plain-id"


def test_the_full_id_is_kept_in_the_raw_document() -> None:
    long_id = "k" * 500
    raw = encode_raw(long_id, "rq:queue:normal", {b"data": b"\x00\x01"})
    assert decode_raw(raw).job_id == long_id.encode()
