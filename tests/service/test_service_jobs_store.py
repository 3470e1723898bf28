"""The job store against a real redis-server: exactly-once commits, cancel, TTL pruning,
idempotency, and the pure helpers beside it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from testsupport.redis_jobs import new_redis
from voiceops_localcluster.redis_server import RedisServer
from voiceops_service.errors import ApiError
from voiceops_service.jobs.models import ChunkMaker, check_job_format, clean_input, plan_chunks
from voiceops_service.jobs.store import JobStore, redacted
from voiceops_service.settings import ServiceSettings

FIELDS = {
    "model": "tts-1",
    "voice": "",
    "response_format": "pcm",
    "speed": 1.0,
    "input_chars": 10,
    "sample_rate": 22050,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    started = new_redis(tmp_path_factory.mktemp("redis"))
    yield started
    started.stop()


def store_test(server: RedisServer, prefix: str, body: object, ttl: int = 3600) -> None:
    async def run() -> None:
        store = JobStore(server.url, prefix, ttl)
        try:
            await store.ensure_group()
            await body(store)  # type: ignore[operator]
        finally:
            await store.close()

    asyncio.run(run())


def maker(index: int, pod: str) -> ChunkMaker:
    return ChunkMaker(index=index, engine="espeak", voice="en-us", tier="", pod=pod, samples=2)


def test_a_chunk_made_twice_is_committed_once(server: RedisServer) -> None:
    async def body(store: JobStore) -> None:
        job_id, _ = await store.create(chunks=["one.", "two."], fields=FIELDS)
        first = await store.take_new("a", 100)
        assert first is not None
        assert await store.commit(first, b"\x01\x00\x02\x00", maker(first.index, "a"))
        assert not await store.commit(first, b"\x09\x00\x09\x00", maker(first.index, "b"))
        job = await store.get(job_id)
        assert job is not None
        assert (job.chunks.done, job.state) == (1, "running")
        assert [m.pod for m in job.made_by] == ["a"]
        assert await store.audio_chunk(job_id, first.index) == b"\x01\x00\x02\x00"
        second = await store.take_new("a", 100)
        assert second is not None
        await store.commit(second, b"\x03\x00", maker(second.index, "a"))
        done = await store.get(job_id)
        assert done is not None
        assert (done.state, done.chunks.done, done.audio_seconds) == ("succeeded", 2, 0.0)

    store_test(server, "t1:", body)


def test_nothing_is_committed_after_a_cancel(server: RedisServer) -> None:
    async def body(store: JobStore) -> None:
        job_id, _ = await store.create(chunks=["one."], fields=FIELDS)
        task = await store.take_new("a", 100)
        assert task is not None
        assert await store.cancel(job_id) is True
        assert await store.cancel(job_id) is False  # already ended
        assert not await store.commit(task, b"\x01\x00", maker(0, "a"))
        assert await store.work(task) is None  # the worker settles it without making it
        assert await store.cancel("job_missing") is None

    store_test(server, "t2:", body)


def test_the_list_forgets_expired_jobs(server: RedisServer) -> None:
    async def body(store: JobStore) -> None:
        old, _ = await store.create(chunks=["old."], fields=FIELDS)
        new, _ = await store.create(chunks=["new."], fields=FIELDS)
        await store.redis.zadd(store.index_key, {old: 1.0})  # created in 1970
        jobs, more = await store.list(0, 10)
        assert [job.id for job in jobs] == [new]
        assert more is False
        assert await store.redis.zscore(store.index_key, old) is None
        assert 0 < await store.redis.ttl(f"t3:job:{new}") <= 60

    store_test(server, "t3:", body, ttl=60)


def test_an_idempotency_key_creates_one_job(server: RedisServer) -> None:
    async def body(store: JobStore) -> None:
        first, created = await store.create(chunks=["a."], fields=FIELDS, idempotency=("k", "d"))
        again, created_again = await store.create(
            chunks=["a."], fields=FIELDS, idempotency=("k", "d")
        )
        assert (created, created_again, again) == (True, False, first)
        assert await store.idempotent_job("k") == (first, "d")
        assert await store.redis.xlen(store.stream) == 1  # one chunk queued, not two

    store_test(server, "t4:", body)


def test_a_silent_holders_chunk_is_retaken(server: RedisServer) -> None:
    async def body(store: JobStore) -> None:
        await store.create(chunks=["a."], fields=FIELDS)
        held = await store.take_new("dead", 100)
        assert held is not None
        assert await store.take_abandoned("alive", 60_000) is None  # not silent long enough
        assert await store.holders() == {"dead": 1}
        retaken = await store.take_abandoned("alive", 0)  # silent for at least 0 ms
        assert retaken == held
        assert await store.holders() == {"alive": 1}
        assert await store.count_try(retaken) == 1

    store_test(server, "t5:", body)


def test_redacted_hides_only_the_password() -> None:
    assert redacted("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redacted("redis://:pw@h/0") == "redis://:***@h/0"
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"


def test_input_rules_name_the_field() -> None:
    with pytest.raises(ApiError) as too_long:
        clean_input("abc", 2)
    assert (too_long.value.param, too_long.value.code) == ("input", "string_too_long")
    with pytest.raises(ApiError) as blank:
        clean_input("\x00 \x01", 10)
    assert blank.value.code == "empty_input"
    assert clean_input("a\x00b", 10) == "a b"
    with pytest.raises(ApiError) as flac:
        check_job_format("flac")
    assert flac.value.param == "response_format"


def test_chunks_keep_every_word_in_order() -> None:
    text = " ".join(f"Sentence number {n} is here." for n in range(200))
    chunks = plan_chunks(text)
    assert len(chunks) > 1
    assert all(len(chunk) <= 400 for chunk in chunks)
    assert " ".join(chunks).split() == text.split()


def test_job_settings_have_limits(tmp_path: Path) -> None:
    assert ServiceSettings(_env_file=None).jobs_enabled is False  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="jobs_max_input_chars"):
        ServiceSettings(jobs_max_input_chars=2_000_000)
    with pytest.raises(ValidationError, match="jobs_ttl_seconds"):
        ServiceSettings(jobs_ttl_seconds=1)
    assert ServiceSettings(jobs_redis_url="redis://h:1/0").jobs_enabled is True
