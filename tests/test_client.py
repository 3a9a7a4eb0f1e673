"""The client against the fake GPUGeek server: every call, every contradiction of the doc, every fault."""
import asyncio
import time

import pytest
from conftest import SECRET_KEY, core, produced

client_mod = core("targets.gpugeek_api")
E = core("errors")
C = core("config")
wire = core("wire")
target_mod = core("targets")

FAST = client_mod.RetryPolicy(attempts=4, base_s=0.01, cap_s=0.02)


def run(coro):
    return asyncio.run(coro)


async def with_client(fake, fn, key=SECRET_KEY):
    async with client_mod.GPUGeekClient.open(fake.base_url, C.ApiKey(key), retry=FAST) as c:
        return await fn(c)


PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
WF = 123456789012345


@pytest.mark.parametrize("variant", [None, "camel_upload", "post_only_presign"])
def test_upload_roundtrip_in_each_variant(fake, variant):
    if variant:
        fake.variants.add(variant)

    async def go(c):
        t = target_mod.GPUGeekTarget(c)
        url, exp = await t.upload(b"\x89PNG-bytes", "a.png")
        return url, exp, await c.download(url)
    url, exp, data = run(with_client(fake, go))
    assert data == b"\x89PNG-bytes" and "?" not in url and exp
    assert fake.count("put") == 1
    if variant == "post_only_presign":
        assert [p for c, p in fake.calls if c == "presign"] == ["/api/v1/file/upload/pre-signed-url"] * 2


@pytest.mark.parametrize("variant", [None, "prompt_id_int", "result_url_str"])
def test_submit_status_results_in_each_variant(fake, variant):
    if variant:
        fake.variants.add(variant)

    async def go(c):
        pid = await c.submit(WF, PROMPT)
        while True:
            d = await c.task(pid)
            if d.final:
                return pid, d
            await asyncio.sleep(0.02)
    pid, d = run(with_client(fake, go))
    assert isinstance(pid, str) and pid.isdigit()
    assert d.status == wire.SUCCEEDED and d.prompt_id == pid and d.workflow_id == WF
    assert list(d.result_url) == ["2"] and all(isinstance(u, str) for u in d.result_url["2"])
    assert d.origin_price == 0.25
    body = fake.bodies[0][1]
    assert body == {"workflow_id": WF, "prompt": PROMPT, "task_type": 1}


def test_workflow_id_is_exact_and_cancel_sends_integer(fake):
    fake.task_opts.update(queue_s=3600)   # still queued when the cancel comes, however slow this machine

    async def go(c):
        pid = await c.submit(999999999999999, PROMPT)
        await c.cancel(pid)
        return pid, await c.task(pid)
    pid, d = run(with_client(fake, go))
    assert fake.bodies[0][1]["workflow_id"] == 999999999999999
    assert fake.bodies[1] == ("cancel", {"task_id": int(pid)})
    assert d.status == wire.CANCELLED


def test_commit_registers_an_external_address(fake):
    assert run(with_client(fake, lambda c: c.commit("https://example.org/a.png"))) == "https://example.org/a.png"


def test_queue_position_reported(fake):
    fake.task_opts.update(queue_s=3600)

    async def go(c):
        a = await c.submit(WF, PROMPT)
        b = await c.submit(WF, PROMPT)
        return await c.task(a), await c.task(b)
    da, db = run(with_client(fake, go))
    assert (da.status, da.current_position, db.current_position, db.queue_size) == (1, 1, 2, 2)


@pytest.mark.parametrize("fault,cls", [("http401", E.AuthError), ("code_error", E.BadRequestError)])
def test_errors_keep_platform_fields(fake, fault, cls):
    fake.fault("task", fault)

    async def go(c):
        return await c.task("123")
    with pytest.raises(cls) as ei:
        run(with_client(fake, go))
    e = ei.value
    produced(str(e)); produced(repr(e))
    assert e.call == "task status" and e.message and e.traceid
    assert e.code not in (None, 0)
    assert str(e).endswith(e.hint)


def test_error_as_http200_with_code(fake):
    fake.variants.add("errors_as_200")

    with pytest.raises(E.AuthError) as ei:
        run(with_client(fake, lambda c: c.task("1"), key="wrong-key-123"))
    assert ei.value.status == 200 and "token" in ei.value.message.lower()


def test_wrong_key_is_auth_error_without_the_key(fake):
    with pytest.raises(E.AuthError) as ei:
        run(with_client(fake, lambda c: c.submit(WF, PROMPT), key="sk-wrong-key-000000"))
    assert "sk-wrong-key" not in str(ei.value) and fake.tasks == {}


@pytest.mark.parametrize("fault", ["http500", "http502html", "http429", "reset", "slow:0.05"])
def test_safe_calls_retry_through_faults(fake, fault):
    fake.fault("task", fault, fault)
    fake.fault("presign", fault)
    fake.fault("put", "http500" if fault in ("http502html", "http429") else fault)

    async def go(c):
        pid = await c.submit(WF, PROMPT)
        d = await c.task(pid)
        url, _ = await c.presigned_url("x.png")
        await c.put(url, b"abc")
        return d
    d = run(with_client(fake, go))
    assert d.prompt_id
    assert fake.count("task") == (1 if fault.startswith("slow") else 3) and fake.count("submit") == 1


def test_non_json_page_is_a_clear_error_when_retries_run_out(fake):
    fake.fault("task", *["http502html"] * 4)
    with pytest.raises(E.BusyError) as ei:
        run(with_client(fake, lambda c: c.task("1")))
    assert "non-JSON page (HTTP 502)" in str(ei.value) and "502 Bad Gateway" in str(ei.value)
    assert fake.count("task") == 4


@pytest.mark.parametrize("fault", ["lost", "http500", "http502html", "reset"])
def test_submit_is_sent_exactly_once(fake, fault):
    fake.fault("submit", fault)
    with pytest.raises(E.SubmitUnknownError) as ei:
        run(with_client(fake, lambda c: c.submit(WF, PROMPT)))
    assert fake.count("submit") == 1
    text = str(ei.value)
    assert "paid task may exist" in text and "NOT resent" in text
    if fault == "lost":
        assert len(fake.tasks) == 1  # the task exists although the answer was lost


def test_submit_refused_with_429_is_sent_again_after_retry_after(fake):
    """A 429 means the platform refused the submit (nothing was created): safe to send again, after the
    pause the server asked for."""
    fake.fault("submit", "http429:1")
    t0 = time.monotonic()
    pid = run(with_client(fake, lambda c: c.submit(WF, PROMPT)))
    assert fake.count("submit") == 2 and list(fake.tasks) == [pid]
    assert time.monotonic() - t0 >= 0.9  # Retry-After: 1 was honoured


def test_submit_refused_with_429_until_retries_run_out_is_busy_not_unknown(fake):
    fake.fault("submit", *["http429"] * 4)
    with pytest.raises(E.BusyError) as ei:
        run(with_client(fake, lambda c: c.submit(WF, PROMPT)))
    assert not isinstance(ei.value, E.SubmitUnknownError) and fake.tasks == {}


def test_submit_retried_when_nothing_was_connected():
    async def go():
        async with client_mod.GPUGeekClient.open("http://127.0.0.1:9", C.ApiKey(SECRET_KEY), retry=FAST) as c:
            return await c.submit(WF, PROMPT)
    with pytest.raises(E.TransportError) as ei:
        run(go())
    assert not isinstance(ei.value, E.SubmitUnknownError)
    assert "Cannot connect" in str(ei.value)


def test_expired_signed_url_is_a_clear_error(fake):
    fake.fault("put", "expired")

    async def go(c):
        url, _ = await c.presigned_url("x.png")
        await c.put(url, b"abc")
    with pytest.raises(E.AuthError) as ei:
        run(with_client(fake, go))
    assert "expired" in str(ei.value) and ei.value.status == 403


def test_truncated_download_is_retried_then_reported(fake):
    async def go(c):
        pid = await c.submit(WF, PROMPT)
        await asyncio.sleep(0.1)
        d = await c.task(pid)
        url = d.result_url["2"][0]
        fake.fault("file", "truncate")
        ok = await c.download(url)
        fake.fault("file", *["truncate"] * 4)
        with pytest.raises(E.TransportError) as ei:
            await c.download(url)
        return ok, ei.value
    ok, err = run(with_client(fake, go))
    assert ok[:8] == b"\x89PNG\r\n\x1a\n" and "cut short" in str(err)


def test_download_limits_and_schemes(fake):
    async def go(c):
        with pytest.raises(E.ResultError):
            await c.download("file:///etc/passwd")
        with pytest.raises(E.ResultError):
            await c.download("ftp://x/y.png")
        url, _ = await c.presigned_url("big.bin")
        await c.put(url, b"x" * 5000)
        with pytest.raises(E.ResultError) as ei:
            await c.download(core("transport").check_result_url(core("targets.gpugeek").strip_query(url)), max_bytes=1000)
        return ei.value
    assert "limit" in str(run(with_client(fake, go)))


def test_status_timeout_is_a_transport_error(fake, monkeypatch):
    monkeypatch.setattr(core("transport"), "API_READ_TIMEOUT_S", 0.1)
    # answered far later than the timeout (before: 0.5 s; a client's loop paused that long on a loaded machine
    # reads the late answer before its timer fires)
    fake.fault("task", *["slow:30"] * 4)
    with pytest.raises(E.TransportError):
        run(with_client(fake, lambda c: c.task("1")))


def test_key_only_goes_to_the_api_host(fake):
    async def go(c):
        url, _ = await c.presigned_url("k.png")
        await c.put(url, b"abc")
        await c.download(core("targets.gpugeek").strip_query(url))
    run(with_client(fake, go))
    assert fake.storage_auth == [None, None]


def test_the_fake_can_stand_behind_a_slow_shared_link(monkeypatch):
    """The benches' network: every request behind a latency, the storage's bytes through links shared by every
    transfer (two transfers at once each get half: the second ends when both sets of bytes have passed). Checked
    on the link's own schedule, on a clock that stands still (before: the real one, from before the first
    transfer began: a loaded machine's pause there failed it); off unless asked."""
    import types

    import fake_gpugeek
    from fake_gpugeek import FakeGPUGeek, Link, network_from_env
    link = Link(8.0)   # 1 MB/s

    async def two():
        await asyncio.gather(link.take(50_000), link.take(50_000))
        return link.free_at - 100.0
    with monkeypatch.context() as m:
        m.setattr(fake_gpugeek, "time", types.SimpleNamespace(monotonic=lambda: 100.0))
        assert run(two()) == pytest.approx(0.1) and link.bytes == 100_000
    fake = FakeGPUGeek(latency_ms=30, down_mbit=100, up_mbit=20)
    assert fake.latency_s == 0.03 and fake.down.rate == 12.5e6 and fake.up.rate == 2.5e6
    plain = FakeGPUGeek()
    assert plain.latency_s == 0 and plain.down is None and plain.up is None
    assert network_from_env() == {} or "GPUGEEK_FAKE_LATENCY_MS" in __import__("os").environ


def test_uploads_and_results_pass_through_the_fake_link(fake):
    """Through the link, the bytes arrive whole and are counted each way."""
    from fake_gpugeek import Link
    fake.latency_s, fake.down, fake.up = 0.005, Link(400.0), Link(400.0)

    async def go(c):
        url, _ = await target_mod.GPUGeekTarget(c).upload(b"x" * 300_000, "a.png")
        assert await c.download(url) == b"x" * 300_000
        pid = await c.submit(WF, PROMPT)
        for _ in range(200):
            d = await c.task(pid)
            if d.final:
                break
            await asyncio.sleep(0.02)
        return [await c.download(u) for _, u in d.all_urls()]
    try:
        got = run(with_client(fake, go))
    finally:
        fake.latency_s, fake.down, fake.up = 0.0, None, None
    assert got and all(g[:8] == b"\x89PNG\r\n\x1a\n" for g in got)
    assert fake.bytes_uploaded == 300_000 and fake.bytes_down == 300_000 + sum(map(len, got))
