"""Every Redis key and script of the job system, behind one class (docs/jobs.md).

Keys under the prefix ``P`` (one per VoiceService sharing a Redis):

- ``P:chunks`` — the stream of chunks to make (``job``, ``index``), consumer group ``workers``;
- ``P:index`` — sorted set of job ids by creation time (the paged list, TTL pruning);
- ``P:job:<id>`` — hash: state, counts, request fields, error;
- ``P:job:<id>:text`` — list: the chunks' text, in order;
- ``P:job:<id>:audio`` — hash: chunk index → its 16-bit PCM (the checkpoints);
- ``P:job:<id>:made`` — hash: chunk index → who made it (JSON);
- ``P:job:<id>:tries`` — hash: chunk index → deliveries so far;
- ``P:idem:<key>`` — the job an ``Idempotency-Key`` created (and a digest of its body).

Every key of a job expires at the same moment, ``ttl`` after its creation. A chunk's
audio is committed by one script that writes it only if no other worker has (HSETNX
semantics), so the finished audio holds every chunk exactly once, whatever was retried.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from voiceops_service.jobs.models import (
    ChunkMaker,
    Job,
    JobChunks,
    JobError,
    JobState,
)

GROUP = "workers"
READ_SOCKET_TIMEOUT_SECONDS = 15.0  # above the longest XREADGROUP block
CONNECT_TIMEOUT_SECONDS = 2.0  # an unreachable Redis is a 503 soon, not a hung request

# KEYS: meta, audio, made; ARGV: index, pcm, maker json, samples, now
_COMMIT = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'cancelled' or state == 'failed' then return -1 end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
local done = redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
redis.call('HINCRBY', KEYS[1], 'samples_done', ARGV[4])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
if done >= tonumber(redis.call('HGET', KEYS[1], 'chunks_total')) then
  redis.call('HSET', KEYS[1], 'state', 'succeeded', 'finished_at', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'state', 'running')
end
return 1
"""

# KEYS: meta; ARGV: new state, now, error message, error chunk ('' = none)
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished_at', ARGV[2], 'updated_at', ARGV[2],
           'error', ARGV[3], 'error_chunk', ARGV[4])
return 1
"""

# KEYS: tries, meta; ARGV: index. The delivery count of one chunk (0 if the job is gone).
_TRY = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local tries = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return tries
"""


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class ChunkTask:
    """One chunk a worker holds: the stream entry and what it names."""

    entry_id: str
    job_id: str
    index: int


@dataclass(frozen=True)
class ChunkWork:
    """What a worker needs to make a chunk."""

    text: str
    voice: str | None
    speed: float
    sample_rate: int
    state: JobState


def _text(value: bytes | str | None, default: str = "") -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else value


class JobStore:
    """The job system's Redis, one instance per process (the API and the workers share it)."""

    def __init__(self, url: str, prefix: str, ttl_seconds: int) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=READ_SOCKET_TIMEOUT_SECONDS,
        )
        self.stream = f"{prefix}chunks"
        self.index_key = f"{prefix}index"
        self._commit = self.redis.register_script(_COMMIT)
        self._finish = self.redis.register_script(_FINISH)
        self._try = self.redis.register_script(_TRY)

    async def close(self) -> None:
        await self.redis.aclose()

    def _job(self, job_id: str, part: str = "") -> str:
        return f"{self.prefix}job:{job_id}{':' + part if part else ''}"

    # --- creating, reading, listing, cancelling -------------------------------

    async def idempotent_job(self, key: str) -> tuple[str, str] | None:
        """(job id, body digest) an Idempotency-Key created, if any."""
        value = await self.redis.get(f"{self.prefix}idem:{key}")
        if value is None:
            return None
        job_id, _, digest = _text(value).partition(" ")
        return job_id, digest

    async def create(
        self,
        *,
        chunks: Sequence[str],
        fields: Mapping[str, str | int | float],
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[str, bool]:
        """A new job (id, True), or with an Idempotency-Key already used (its id, False)."""
        job_id = f"job_{uuid.uuid4().hex}"
        if idempotency is not None:
            key, digest = idempotency
            taken = await self.redis.set(
                f"{self.prefix}idem:{key}", f"{job_id} {digest}", nx=True, ex=self.ttl_seconds
            )
            if not taken:
                existing = await self.idempotent_job(key)
                if existing is not None:
                    return existing[0], False
        try:
            await self._write_job(job_id, chunks, fields)
        except BaseException:
            if idempotency is not None:  # a retry with the key must be able to create it
                await self.redis.delete(f"{self.prefix}idem:{idempotency[0]}")
            raise
        return job_id, True

    async def _write_job(
        self, job_id: str, chunks: Sequence[str], fields: Mapping[str, str | int | float]
    ) -> None:
        now = time.time()
        meta = self._job(job_id)
        text = self._job(job_id, "text")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                meta,
                mapping={
                    **fields,
                    "state": JobState.QUEUED.value,
                    "created_at": now,
                    "updated_at": now,
                    "chunks_total": len(chunks),
                    "chunks_done": 0,
                    "samples_done": 0,
                },
            )
            pipe.rpush(text, *chunks)
            pipe.expire(meta, self.ttl_seconds)
            pipe.expire(text, self.ttl_seconds)
            pipe.zadd(self.index_key, {job_id: now})
            for index in range(len(chunks)):
                pipe.xadd(self.stream, {"job": job_id, "index": index})
            await pipe.execute()

    async def get(self, job_id: str) -> Job | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._job(job_id))
            pipe.hgetall(self._job(job_id, "made"))
            meta, made = await pipe.execute()
        if not meta:
            return None
        return _job_from(job_id, meta, made)

    async def state(self, job_id: str) -> JobState | None:
        value = await self.redis.hget(self._job(job_id), "state")
        return None if value is None else JobState(_text(value))

    async def list(self, offset: int, limit: int) -> tuple[list[Job], bool]:
        """Newest first; expired ids leave the index here."""
        await self.redis.zremrangebyscore(self.index_key, "-inf", time.time() - self.ttl_seconds)
        ids = await self.redis.zrevrange(self.index_key, offset, offset + limit)
        jobs = [job for raw in ids[:limit] if (job := await self.get(_text(raw))) is not None]
        return jobs, len(ids) > limit

    async def cancel(self, job_id: str) -> bool | None:
        """True: cancelled now; False: already finished; None: no such job."""
        result = await self._finish(
            keys=[self._job(job_id)], args=[JobState.CANCELLED.value, time.time(), "", ""]
        )
        return None if result == -1 else bool(result)

    async def fail(self, job_id: str, message: str, chunk: int | None) -> None:
        await self._finish(
            keys=[self._job(job_id)],
            args=[JobState.FAILED.value, time.time(), message, "" if chunk is None else chunk],
        )

    async def audio_chunk(self, job_id: str, index: int) -> bytes | None:
        return await self.redis.hget(self._job(job_id, "audio"), str(index))

    # --- the workers' side ------------------------------------------------------

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def take_new(self, consumer: str, block_ms: int) -> ChunkTask | None:
        answer = await self.redis.xreadgroup(
            GROUP, consumer, {self.stream: ">"}, count=1, block=block_ms
        )
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                return _task(entry_id, fields)
        return None

    async def take_abandoned(self, consumer: str, min_idle_ms: int) -> ChunkTask | None:
        """A chunk whose holder has been silent ``min_idle_ms`` (XAUTOCLAIM), now ours."""
        answer = await self.redis.xautoclaim(
            self.stream, GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=1
        )
        for entry_id, fields in answer[1]:
            if fields:  # an entry deleted meanwhile comes back without fields
                return _task(entry_id, fields)
        return None

    async def hold(self, consumer: str, task: ChunkTask) -> None:
        """Reset the chunk's idle time: its holder is alive and working on it."""
        await self.redis.xclaim(
            self.stream, GROUP, consumer, min_idle_time=0, message_ids=[task.entry_id], justid=True
        )

    async def release(self, task: ChunkTask) -> None:
        """The chunk is settled (made, or no longer wanted): off the stream for good."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, task.entry_id)
            pipe.xdel(self.stream, task.entry_id)
            await pipe.execute()

    async def count_try(self, task: ChunkTask) -> int:
        return int(
            await self._try(
                keys=[self._job(task.job_id, "tries"), self._job(task.job_id)], args=[task.index]
            )
        )

    async def work(self, task: ChunkTask) -> ChunkWork | None:
        """The chunk's text and request, or None when the job or the chunk is settled."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._job(task.job_id), ["state", "voice", "speed", "sample_rate"])
            pipe.lindex(self._job(task.job_id, "text"), task.index)
            pipe.hexists(self._job(task.job_id, "audio"), str(task.index))
            (state, voice, speed, rate), text, made = await pipe.execute()
        if state is None or text is None or made:
            return None
        job_state = JobState(_text(state))
        if job_state.terminal:
            return None
        return ChunkWork(
            text=_text(text),
            voice=_text(voice) or None,
            speed=float(_text(speed, "1")),
            sample_rate=int(_text(rate)),
            state=job_state,
        )

    async def commit(self, task: ChunkTask, pcm: bytes, maker: ChunkMaker) -> bool:
        """Store the chunk's audio unless it is already there; True when this call stored it."""
        stored = await self._commit(
            keys=[
                self._job(task.job_id),
                self._job(task.job_id, "audio"),
                self._job(task.job_id, "made"),
            ],
            args=[task.index, pcm, maker.model_dump_json(), len(pcm) // 2, time.time()],
        )
        return stored == 1

    async def holders(self) -> dict[str, int]:
        """Consumer name → chunks it holds (XPENDING), for tests and the chaos runner."""
        summary = await self.redis.xpending(self.stream, GROUP)
        return {_text(row["name"]): int(row["pending"]) for row in summary.get("consumers") or []}


def _task(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> ChunkTask:
    return ChunkTask(
        entry_id=_text(entry_id),
        job_id=_text(fields[b"job"]),
        index=int(_text(fields[b"index"])),
    )


def _job_from(job_id: str, meta: Mapping[bytes, bytes], made: Mapping[bytes, bytes]) -> Job:
    field = {_text(k): _text(v) for k, v in meta.items()}
    makers = sorted(
        (ChunkMaker.model_validate(json.loads(value)) for value in made.values()),
        key=lambda maker: maker.index,
    )
    engines: dict[str, int] = {}
    for maker in makers:
        engines[maker.engine] = engines.get(maker.engine, 0) + 1
    rate = int(field["sample_rate"])
    error = None
    if field.get("error"):
        chunk = field.get("error_chunk", "")
        error = JobError(message=field["error"], chunk=int(chunk) if chunk else None)
    return Job(
        id=job_id,
        state=JobState(field["state"]),
        created_at=float(field["created_at"]),
        updated_at=float(field["updated_at"]),
        finished_at=float(field["finished_at"]) if field.get("finished_at") else None,
        input_chars=int(field["input_chars"]),
        voice=field.get("voice") or None,
        response_format=field["response_format"],  # type: ignore[arg-type]
        speed=float(field["speed"]),
        sample_rate=rate,
        chunks=JobChunks(total=int(field["chunks_total"]), done=int(field["chunks_done"])),
        audio_seconds=round(int(field["samples_done"]) / rate, 3),
        engines=engines,
        made_by=makers,
        error=error,
    )
