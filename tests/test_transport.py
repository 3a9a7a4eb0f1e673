"""The one transport: retries, caps after decompression, same-host redirects, credentials bound to their
destination; and the doc's other side of each contradiction (sample-side call 1, zoned expiry times)."""
import asyncio
import datetime

import pytest
from conftest import SECRET_KEY, core, said
from other_host import OtherHost

client_mod = core("targets.gpugeek_api")
transport = core("transport")
target_mod = core("targets")
journal_mod = core("journal")
E = core("errors")
C = core("config")

FAST = transport.RetryPolicy(attempts=4, base_s=0.01, cap_s=0.02)
PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
WF = 123456789012345


@pytest.fixture
def recorder():
    r = OtherHost()
    yield r
    r.stop()


def run_client(fake, fn):
    async def go():
        async with client_mod.GPUGeekClient.open(fake.base_url, C.ApiKey(SECRET_KEY), retry=FAST) as c:
            return await fn(c)
    return asyncio.run(go())


async def finished(c, fake):
    pid = await c.submit(WF, PROMPT)
    await asyncio.sleep(0.1)
    return await c.task(pid)


def test_gzip_answers_are_read_everywhere(fake):
    fake.variants.add("gzip")

    async def go(c):
        t = target_mod.GPUGeekTarget(c)
        url, _ = await t.upload(b"\x89PNG" + bytes(300_000), "a.png")  # big enough to be compressed
        d = await finished(c, fake)
        return await c.download(url), await c.download(d.result_url["2"][0])
    up, res = run_client(fake, go)
    assert up == b"\x89PNG" + bytes(300_000) and res[:4] == b"\x89PNG"


def test_gzip_bomb_is_refused_at_once_with_bounded_memory(fake):
    async def go(c):
        d = await finished(c, fake)
        fake.fault("file", "gzip_bomb", "gzip_bomb", "gzip_bomb", "gzip_bomb")
        with pytest.raises(E.ResultError) as ei:
            await c.download(d.result_url["2"][0])
        return ei.value
    err = run_client(fake, go)
    assert "inflated past" in str(err)
    assert fake.count("file") == 1  # refused, not fetched again


def test_transport_cap_counts_inflated_bytes(fake):
    """A compressed answer is capped on what it inflates to, not on its Content-Length."""
    async def go():
        async with transport.new_session() as s:
            t = transport.Transport(s, FAST)
            fake.fault("file", "gzip_bomb")
            with pytest.raises(E.ResultError):
                await t.request("GET", fake.base_url + "/files/x/y.png", call="download", safe=True,
                                max_bytes=1 << 20)
    asyncio.run(go())


def test_redirect_to_another_host_is_refused_and_no_key_follows(fake, recorder):
    fake.fault("task", f"redirect:{recorder.url}/api/v1/task/1")
    with pytest.raises(E.ResultError) as ei:
        run_client(fake, lambda c: c.task("1"))
    assert "another host" in str(ei.value)
    assert recorder.seen == []


def test_a_result_on_another_host_never_receives_the_key(fake, recorder):
    async def go(c):
        await c.download(recorder.url + "/api/v1/files/a.png")
        await c.download(recorder.url + "/x.png")
    run_client(fake, go)
    assert len(recorder.seen) == 2
    assert all("Authorization" not in h for _, _, h in recorder.seen)


def test_credentials_are_bound_to_origin_and_path():
    seen = {}

    async def go():
        async with transport.new_session() as s:
            t = transport.Transport(s)
            t.bind("https://api.example.com/api/v1", {"Authorization": "Bearer k"})
            for url in ("https://api.example.com/api/v1/task/1", "https://api.example.com/api/v1",
                        "https://api.example.com/oss/x", "https://api.example.com/api/v10/x",
                        "http://api.example.com/api/v1/task/1", "https://api.example.com:8443/api/v1/x",
                        "https://evil.example.com/api/v1/task/1"):
                seen[url] = "Authorization" in t._headers_for(url, None, True)
    asyncio.run(go())
    assert [k for k, v in seen.items() if v] == ["https://api.example.com/api/v1/task/1",
                                                 "https://api.example.com/api/v1"]


def test_sample_side_call_1_query_string_post(fake):
    """The doc's sample: POST ...pre-signed-url?fileName=NAME with no body, answered in camelCase."""
    fake.variants.add("post_only_presign")
    url, exp = run_client(fake, lambda c: c.presigned_url("a b.png"))
    posts = [p for c, p in fake.calls if c == "presign"]
    assert len(posts) == 2 and url.startswith(fake.base_url + "/oss/") and exp


CST = datetime.timezone(datetime.timedelta(hours=8))


@pytest.mark.parametrize("text,expected", [
    ("2023-01-01T00:00:00Z", datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)),
    ("2023-01-01T08:00:00+08:00", datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)),
    ("2023-01-01 00:00:00-05:00", datetime.datetime(2023, 1, 1, 5, tzinfo=datetime.timezone.utc)),
    ("2023-01-01 08:00:00", datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)),  # platform clock: UTC+8
    ("2023-01-01T08:00:00.250", datetime.datetime(2023, 1, 1, 0, 0, 0, 250000, tzinfo=datetime.timezone.utc)),
    (1672531200, datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)),
    ("1672531200000", datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)),
])
@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/Los_Angeles", "UTC"])
def test_expiry_times_honour_their_zone_whatever_the_machine_clock(text, expected, tz, monkeypatch):
    import time
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        assert journal_mod.parse_expiry(text) == pytest.approx(expected.timestamp())
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("tz", ["America/Los_Angeles", "Asia/Shanghai"])
def test_an_expired_upload_is_never_reused(fake, tz, monkeypatch):
    """West of UTC an expiry in the platform's zone-less clock read as local time looked valid for hours."""
    import time
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        fake.variants.add("expiry_past")
        cache = journal_mod.UploadCache()
        transfer = core("transfer")

        async def go(c):
            t = target_mod.GPUGeekTarget(c)
            await transfer.upload_once(t, cache, b"same-bytes", "a.png")
            await transfer.upload_once(t, cache, b"same-bytes", "a.png")
        run_client(fake, go)
        assert fake.count("put") == 2
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("variant", ["expiry_z", "expiry_offset", None])
def test_a_live_upload_is_reused_in_every_expiry_form(fake, variant):
    if variant:
        fake.variants.add(variant)
    cache = journal_mod.UploadCache()
    transfer = core("transfer")

    async def go(c):
        t = target_mod.GPUGeekTarget(c)
        a = await transfer.upload_once(t, cache, b"same-bytes", "a.png")
        b = await transfer.upload_once(t, cache, b"same-bytes", "a.png")
        return a, b
    a, b = run_client(fake, go)
    assert a == b and fake.count("put") == 1


def download_with_a_new_session(url: str) -> bytes:
    async def go():
        async with transport.new_session() as session:
            return await transport.download(transport.Transport(session, retry=FAST), url)
    return asyncio.run(go())


def test_a_netrc_never_puts_credentials_on_a_request(recorder, tmp_path, no_env_proxy):
    """aiohttp's trust_env took credentials from ~/.netrc for any host it names, a result host included; the
    pack sends only the credentials it binds to their own origin."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-for-the-result-host\n")
    netrc.chmod(0o600)
    no_env_proxy.setenv("NETRC", str(netrc))
    download_with_a_new_session(recorder.url + "/a.png")
    assert len(recorder.seen) == 1 and "Authorization" not in recorder.seen[0][2]


def test_a_proxy_from_the_environment_carries_the_requests_and_no_proxy_is_honoured(recorder, no_env_proxy):
    """HTTP_PROXY reaches every request (read once per host and session); NO_PROXY keeps a host direct."""
    no_env_proxy.setenv("HTTP_PROXY", recorder.url)
    assert download_with_a_new_session("http://results.example.invalid/a.png")
    method, _, headers = recorder.seen[-1]
    assert method == "GET" and headers["Host"] == "results.example.invalid"   # asked of the proxy
    no_env_proxy.setenv("NO_PROXY", "example.invalid")
    with pytest.raises(E.TransportError) as direct:
        download_with_a_new_session("http://results.example.invalid/b.png")
    assert direct.value.cause == "dns" and len(recorder.seen) == 1   # straight to the host, not through the proxy


PROXY = "http://proxy.example.invalid:3128"
LOCAL = ["http://localhost:8188/prompt", "http://127.0.0.1:8188", "http://[::1]:8188", "ws://localhost:8188/ws",
         "http://192.168.1.20:8188", "http://10.0.0.5/x", "http://172.16.3.4", "http://169.254.10.1",
         "http://[fe80::1]:8188", "http://[fd00::5]", "http://gpu-box:8188", "ws://gpu-box.local:8188/ws",
         "https://gpu-box.local/x"]
REMOTE = ["http://results.example.com/a.png", "https://comfyapi.gpugeek.com/api/v1", "http://8.8.8.8/x",
          "ws://cloud.example.com/ws", "https://[2001:4860::8888]/x"]


@pytest.mark.parametrize("url", LOCAL + REMOTE)
def test_the_environments_proxy_never_carries_a_request_to_this_machine_or_its_network(url, no_env_proxy):
    """Loopback, private and link-local addresses, single-label and .local names go direct whatever HTTP_PROXY
    says (NO_PROXY unset): a proxy is for the outside world, and a hop the user did not choose for a LAN server."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "WS_PROXY", "WSS_PROXY"):
        no_env_proxy.setenv(name, PROXY)
    proxy, _ = transport.env_proxy(url)
    assert (proxy is None) == (url in LOCAL) and (proxy is None or str(proxy) == PROXY)


def test_a_token_for_a_local_server_never_reaches_the_proxy(recorder, no_env_proxy):
    """With HTTP_PROXY set and no NO_PROXY, a request to http://localhost went to the proxy, bearer token included."""
    no_env_proxy.setenv("HTTP_PROXY", recorder.url)
    server = OtherHost()
    try:
        url = server.url.replace("127.0.0.1", "localhost") + "/system_stats"

        async def go():
            async with transport.new_session() as session:
                t = transport.Transport(session, retry=FAST)
                t.bind(url, {"Authorization": "Bearer tok-local"})
                return await t.request("GET", url, call="test", safe=True)
        assert asyncio.run(go()).status == 200
        assert recorder.seen == [] and server.seen[0][2]["Authorization"] == "Bearer tok-local"
    finally:
        server.stop()


def test_a_credential_never_crosses_a_proxy_in_clear(recorder, no_env_proxy):
    """A request in plain http (or ws) to an origin that holds a credential goes direct, never through the
    environment's proxy, which would read it; a request there without one, and one in https (a tunnel the proxy
    cannot read), still take the proxy."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "WS_PROXY"):
        no_env_proxy.setenv(name, recorder.url)

    async def go():
        async with transport.new_session() as session:
            t = transport.Transport(session, retry=transport.RetryPolicy(attempts=1))
            t.bind("http://comfy.example.invalid:8188", {"Authorization": "Bearer " + SECRET_KEY})
            t.bind("https://cloud.example.invalid", {"Authorization": "Bearer " + SECRET_KEY})
            assert t.proxy_for("ws://comfy.example.invalid:8188/ws") == (None, None)
            with pytest.raises(E.TransportError) as direct:
                await t.request("GET", "http://comfy.example.invalid:8188/system_stats", call="test", safe=True)
            assert recorder.seen == [] and direct.value.cause == "dns"   # went straight there: no such host
            with pytest.raises(E.TransportError):   # the proxy refuses the tunnel (502)
                await t.request("GET", "https://cloud.example.invalid/x", call="test", safe=True)
            await t.request("GET", "http://cdn.example.invalid/a.png", call="download", safe=True)
    asyncio.run(go())
    (tunnel, _, tunnel_headers), (method, _, headers) = recorder.seen
    assert tunnel == "CONNECT" and tunnel_headers["Host"].startswith("cloud.example.invalid")
    assert method == "GET" and headers["Host"] == "cdn.example.invalid"
    assert not any(SECRET_KEY in str(seen) for seen in recorder.seen)


# ---- a task's memory: its bytes charged as they arrive ---------------------------------------------------------
MiB = 1 << 20


@pytest.mark.parametrize("chunked", [False, True], ids=["length-stated", "chunked"])
def test_a_tasks_bytes_are_charged_as_they_arrive_and_its_memory_stays_near_its_budget(fake, chunked):
    """Issue 38: 8 result files of 48 MiB under a 96 MiB budget held +563 MiB before the refusal (a file was charged
    once it had arrived whole, 8 downloads in flight). Each piece is charged as it arrives (a stated length before
    the body is read), so the refusal comes when the budget is passed, with no more than the budget held."""
    import tracemalloc
    from fake_gpugeek import Generated
    run_mod = core("run")
    size, budget = 48 * MiB, 96 * MiB
    fake.runner = lambda prompt, task: {"2": [(f"clip_{i}.mp4", Generated(size, seed=i, chunked=chunked))
                                              for i in range(8)]}

    async def go(c):
        d = await finished(c, fake)
        t = target_mod.GPUGeekTarget(c)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            with pytest.raises(E.ResultError) as ei:
                await run_mod.fetch_results(d, t, budget=transport.ByteBudget(budget))
            return ei.value, tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    err, peak = run_client(fake, go)
    assert peak < budget + budget // 2, f"{peak / MiB:.0f} MiB held for a budget of {budget / MiB:.0f} MiB"
    assert fake.bytes_down < 8 * size   # refused while the files came, not after
    assert err.message == said("err_task_bytes", "en", limit="96 MB")
    assert err.message_in("zh") == said("err_task_bytes", "zh", limit="96 MB")


def test_a_chunked_body_is_charged_twice_while_it_is_held_twice(fake):
    """A body of no stated length is read into a growing buffer, then copied once into the bytes handed on: for that
    moment it is held twice, and the task's budget (a memory bound) counts it so. Under load, eight such downloads
    held 147 MiB for a 96 MiB budget (CI, stop 42) because each one's copy was not counted."""
    from fake_gpugeek import Generated
    run_mod = core("run")
    size = 8 * MiB
    fake.runner = lambda prompt, task: {"2": [("clip.mp4", Generated(size, seed=1, chunked=True))]}

    class Watched(transport.ByteBudget):
        peak = 0

        def take(self, n):
            super().take(n)
            Watched.peak = max(Watched.peak, self.used)

    async def go(c):
        d = await finished(c, fake)
        budget = Watched(64 * MiB)
        files = await run_mod.fetch_results(d, target_mod.GPUGeekTarget(c), budget=budget)
        return files, budget.used
    files, used = run_client(fake, go)
    assert [len(data) for _, data in files["2"]] == [size]
    assert Watched.peak >= 2 * size   # the moment of two copies was counted
    assert used == size               # and given back once the buffer was gone
