"""The web page (/web/) in headless Chromium against a real espeak service.

Debian's ``chromium`` driven by playwright (never its own browser download);
axe-core from npm (tests/service/web, ``npm ci`` by ``make test``) is injected by
the test, never served. Missing chromium or axe-core skips here and fails under
CI=true, where ``make test`` installs both. The screenshot of a spoken answer is
kept in build/web/screenshot.png.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from testsupport.needs import missing
from testsupport.redis_jobs import jobs_env, long_text
from testsupport.redis_jobs import redis_server as redis_server  # the fixture
from testsupport.service_process import FAULT_TOKEN, ServiceProcess, start_service, wait_for
from voiceops_contract import pod
from voiceops_localcluster.redis_server import RedisServer
from voiceops_service.audio import chunk_text

REPO = Path(__file__).resolve().parents[2]
AXE_SCRIPT = REPO / "tests/service/web/node_modules/axe-core/axe.min.js"
SCREENSHOT = REPO / "build/web/screenshot.png"
CHROMIUM = "chromium"  # Debian's package: apt-get install -y chromium
DEADLINE_MS = 20_000
GIB = 2**30
FAULT_HEADERS = {pod.FAULT_TOKEN_HEADER: FAULT_TOKEN}


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = shutil.which(CHROMIUM)
    if path is None:
        missing("the web UI tests need Debian's chromium (apt-get install -y chromium)")
    return str(path)


@pytest.fixture(scope="module")
def web_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """espeak, one engine call at a time and no queue (so one slow call makes it busy),
    fault injection on (simulated GPU memory, slow engine calls), named as a GPU-tier pod."""
    service = start_service(
        tmp_path_factory.mktemp("web"),
        {
            "VOICEOPS_ENGINE": "espeak",
            "VOICEOPS_MAX_CONCURRENCY": "1",
            "VOICEOPS_MAX_QUEUE": "0",
            "VOICEOPS_FAULT_INJECTION": "true",
            "VOICEOPS_FAULT_TOKEN": FAULT_TOKEN,
            "VOICEOPS_TIER": "gpu",
            "VOICEOPS_POD_NAME": "tts-gpu-7f9c-abcde",
        },
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver: Playwright, chromium_path: str) -> Iterator[Browser]:
    browser = playwright_driver.chromium.launch(executable_path=chromium_path)
    yield browser
    browser.close()


class PageWatch:
    """What the page said on its console and which CSP violations it reported."""

    def __init__(self, page: Page) -> None:
        self.console: list[ConsoleMessage] = []
        page.on("console", self._note)

    def _note(self, message: ConsoleMessage) -> None:
        self.console.append(message)

    def errors(self) -> list[str]:
        return [message.text for message in self.console if message.type == "error"]

    def csp_violations(self, page: Page) -> list[str]:
        reported = page.evaluate("window.__cspViolations")
        console = [text for text in self.errors() if "Content Security Policy" in text]
        return [*reported, *console]


@pytest.fixture
def blank_page(browser: Browser) -> Iterator[Page]:
    """A new page that records the CSP violations it reports."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(DEADLINE_MS)
    page.add_init_script(
        "window.__cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    yield page
    context.close()


@pytest.fixture
def page_watch(blank_page: Page) -> PageWatch:
    return PageWatch(blank_page)


def open_page(page: Page, service: ServiceProcess) -> Page:
    """The page, loaded from ``/`` (which redirects), with its status shown."""
    page.goto(f"{service.url}/")
    expect(page.locator("#status-ready")).to_have_text("yes")
    return page


@pytest.fixture
def page(blank_page: Page, page_watch: PageWatch, web_service: ServiceProcess) -> Page:
    return open_page(blank_page, web_service)


def speak_and_wait(page: Page) -> None:
    page.click("#speak")
    page.wait_for_selector("#answer:not([hidden])")
    page.wait_for_selector("#speak:not([disabled])")


def audio_facts(page: Page) -> dict[str, object]:
    """The audio element's source, duration, and the size of the blob it plays.

    The blob itself cannot be fetched from the page: its policy's connect-src is 'self'.
    """
    return page.eval_on_selector(
        "#audio",
        "(audio) => ({src: audio.src, duration: audio.duration,"
        " bytes: Number(audio.dataset.bytes), ready: audio.readyState})",
    )


def set_faults(service: ServiceProcess, **faults: object) -> None:
    response = httpx.post(
        f"{service.url}{pod.PATH_FAULTS}", json=faults, headers=FAULT_HEADERS, timeout=5
    )
    assert response.status_code == 200, response.text


def clear_faults(service: ServiceProcess) -> None:
    response = httpx.delete(f"{service.url}{pod.PATH_FAULTS}", headers=FAULT_HEADERS, timeout=5)
    assert response.status_code == 200, response.text


def test_status_json_says_what_the_page_shows(web_service: ServiceProcess) -> None:
    set_faults(web_service, gpu_memory={"used_bytes": 3 * GIB, "total_bytes": 16 * GIB})
    try:

        def simulated_memory() -> dict[str, object] | None:
            status = httpx.get(f"{web_service.url}{pod.PATH_WEB_STATUS}", timeout=5).json()
            return status if status["gpu_memory"] else None

        status = wait_for(simulated_memory)
    finally:
        clear_faults(web_service)
    assert status["ready"] is True
    assert status["reasons"] == {}
    assert status["tier"] == "gpu"
    assert status["pod"] == "tts-gpu-7f9c-abcde"
    assert status["engine"]["name"] == "espeak"
    assert status["gpu_memory"] == {
        "used_bytes": 3 * GIB,
        "total_bytes": 16 * GIB,
        "gpus": 1,
        "healthy": True,
        "simulated": True,
    }
    assert status["admission"] == {
        "running": 0,
        "queued": 0,
        "max_concurrency": 1,
        "max_queue": 0,
        "saturated": False,
    }
    assert status["voices"] == [status["default_voice"]]
    assert status["max_input_chars"] == 4096
    assert status["jobs_enabled"] is False


def test_page_is_served_with_a_strict_policy(web_service: ServiceProcess) -> None:
    with web_service.client() as client:
        root = client.get("/")
        assert root.status_code == 307
        assert root.headers["location"] == "web/"
        assert client.get("/web").headers["location"] == "web/"
        for name in ("", "app.js", "style.css", "status.json"):
            response = client.get(f"/web/{name}")
            assert response.status_code == 200, name
            policy = response.headers["content-security-policy"]
            assert "default-src 'self'" in policy
            assert "script-src 'self';" in policy
            assert "media-src 'self' blob:" in policy
            assert "frame-ancestors 'none'" in policy
            assert "unsafe-inline" not in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
        assert client.get("/web/index.html").text == client.get("/web/").text
        other = client.get("/web/settings.py")
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "not_found"
        html = client.get("/web/").text
    # Nothing from another origin, nothing inline for the policy to allow.
    assert "http://" not in html
    assert "https://" not in html
    assert "<style" not in html
    assert " style=" not in html
    assert "<script>" not in html
    assert " on" + "click=" not in html


def test_speak_plays_audio_and_names_who_answered(
    page: Page, page_watch: PageWatch, web_service: ServiceProcess
) -> None:
    set_faults(web_service, gpu_memory={"used_bytes": 5 * GIB, "total_bytes": 16 * GIB})
    try:
        expect(page.locator("#status-gpu")).to_have_text("5.0 GiB of 16.0 GiB (31 %), simulated")
        assert page.inner_text("#status-tier") == "gpu"
        assert page.inner_text("#status-pod") == "tts-gpu-7f9c-abcde"
        assert "Ready: tier gpu, engine espeak." in page.inner_text("#summary")
        page.fill("#text", "")
        page.type("#text", "The web page speaks through the real service.")
        assert page.inner_text("#counter") == "45 of 4096 characters"
        speak_and_wait(page)
        facts = audio_facts(page)
        assert str(facts["src"]).startswith("blob:")
        assert facts["bytes"] > 44  # more than a WAV header
        assert facts["duration"] > 0
        assert page.inner_text("#answer-engine") == "espeak"
        assert page.inner_text("#answer-voice") == "en-us"
        assert page.inner_text("#answer-tier") == "gpu"
        assert page.is_hidden("#progress-box")  # no job for short text
        assert page.inner_text("#answer-latency").endswith(" ms")
        assert "× real time" in page.inner_text("#answer-rtf")
        assert page.get_attribute("#download", "download") == "speech.wav"
        assert page.is_hidden("#error")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        clear_faults(web_service)
    assert page_watch.csp_violations(page) == []
    assert page_watch.errors() == []


@pytest.mark.parametrize("response_format", ["pcm", "flac"])
def test_other_formats_play_too(page: Page, response_format: str) -> None:
    page.select_option("#format", response_format)
    speak_and_wait(page)
    facts = audio_facts(page)
    assert facts["bytes"] > 44
    assert facts["duration"] > 0
    assert page.get_attribute("#download", "download") == f"speech.{response_format}"


def test_bad_input_is_a_readable_message(page: Page) -> None:
    page.fill("#text", "   ")
    page.click("#speak")
    assert page.inner_text("#error") == "Type some text to speak."
    assert page.get_attribute("#text", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "text"

    page.fill("#text", "Too fast.")
    page.fill("#speed", "9")
    page.click("#speak")
    page.wait_for_selector("#error:not([hidden])")
    page.wait_for_selector("#speak:not([disabled])")
    message = page.inner_text("#error")
    assert message.startswith("The service refused this (400): speed:"), message
    assert "4" in message
    assert page.get_attribute("#speed", "aria-invalid") == "true"
    assert page.get_attribute("#text", "aria-invalid") is None

    page.fill("#speed", "1")
    page.evaluate(
        "const option = new Option('no-such-voice', 'no-such-voice');"
        "document.getElementById('voice').add(option); option.selected = true;"
    )
    page.click("#speak")
    expect(page.locator("#error")).to_contain_text("voice")
    assert page.get_attribute("#voice", "aria-invalid") == "true"
    assert "Traceback" not in page.inner_text("body")


def test_too_large_a_body_is_413_in_words(page: Page) -> None:
    page.fill("#text", "a" * 60_000)  # past the 53 KB the service reads at most
    assert "over the limit" in page.inner_text("#counter")
    page.click("#speak")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error").startswith("The request is too large: request body is")


def test_busy_service_says_when_to_retry(page: Page, web_service: ServiceProcess) -> None:
    set_faults(web_service, engine_delay_seconds=5.0)
    holder = threading.Thread(
        target=lambda: httpx.post(
            f"{web_service.url}{pod.PATH_SPEECH}",
            json={"model": "tts-1", "input": "Holding the only engine slot."},
            timeout=30,
        )
    )
    holder.start()
    try:

        def saturated() -> bool:
            ready = httpx.get(f"{web_service.url}{pod.PATH_READY}", timeout=5).json()
            return ready["admission"]["saturated"]

        wait_for(saturated)  # the one slot is taken and there is no queue
        page.click("#speak")
        page.wait_for_selector("#error:not([hidden])")
        message = page.inner_text("#error")
        assert message.startswith("The service is busy: retry in "), message
        retry_after = message.removeprefix("The service is busy: retry in ").split(" s.")[0]
        assert int(retry_after) >= 1
        # The pod's panel says so too, at its next reading (every 2 s).
        expect(page.locator("#status-queued")).to_have_text("0 of 0 (full: new requests get 429)")
        assert page.inner_text("#status-running") == "1 of 1"
    finally:
        clear_faults(web_service)
        holder.join(timeout=30)


def test_keyboard_reaches_every_control_and_speaks(page: Page) -> None:
    order = []
    for _ in range(7):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.className"))
    assert order[:6] == ["skip", "text", "voice", "speed", "format", "speak"], order
    page.focus("#text")
    page.keyboard.press("Control+A")
    page.keyboard.type("Spoken from the keyboard.")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#answer:not([hidden])")
    assert audio_facts(page)["duration"] > 0
    page.evaluate("document.getElementById('answer').hidden = true")
    page.focus("#speak")
    page.keyboard.press("Enter")
    page.wait_for_selector("#answer:not([hidden])")
    # Every control has an accessible name from its label.
    for control in ("text", "voice", "speed", "format"):
        assert page.get_by_label(control.capitalize(), exact=True).get_attribute("id") == control


def axe_violations(page: Page) -> list[tuple[str, str, list[object]]]:
    """axe-core's WCAG 2.1 A/AA and best-practice violations on the page as it is now."""
    if not AXE_SCRIPT.exists():
        missing(f"axe-core is not installed: run `npm ci` in {AXE_SCRIPT.parents[2]}")
    # Injected through the driver, never served: the page's policy does not allow it.
    page.evaluate(AXE_SCRIPT.read_text())
    results = page.evaluate(
        "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa',"
        " 'best-practice']})"
    )
    assert len(results["passes"]) > 10  # it really checked
    return [
        (v["id"], v["impact"], [node["target"] for node in v["nodes"]])
        for v in results["violations"]
    ]


def test_axe_finds_no_violations(page: Page) -> None:
    assert axe_violations(page) == []  # as loaded
    speak_and_wait(page)
    page.fill("#speed", "9")
    page.click("#speak")
    page.wait_for_selector("#error:not([hidden])")
    assert axe_violations(page) == []  # with an answer and an error shown


def test_setting_off_leaves_no_page(tmp_path: Path) -> None:
    service = start_service(tmp_path, {"VOICEOPS_ENGINE": "espeak", "VOICEOPS_WEB_UI": "false"})
    try:
        with service.client() as client:
            for path in ("/", "/web", "/web/", "/web/app.js", "/web/status.json"):
                assert client.get(path).status_code == 404, path
            assert client.get("/readyz").status_code == 200
    finally:
        service.stop()


@pytest.fixture(scope="module")
def jobs_web_service(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[ServiceProcess]:
    """A fallback-tier pod with the job API on a real redis-server, a short speech limit
    (so a paragraph is a job), one try per chunk (so an out-of-memory chunk fails it) and
    a readiness stall limit of 1 s (so a slow engine call makes it not ready)."""
    service = start_service(
        tmp_path_factory.mktemp("web-jobs"),
        jobs_env(
            redis_server,
            VOICEOPS_WEB_UI="true",
            VOICEOPS_TIER="fallback",
            VOICEOPS_MAX_INPUT_CHARS="300",
            VOICEOPS_JOBS_MAX_INPUT_CHARS="6000",
            VOICEOPS_JOBS_WORKERS="2",
            VOICEOPS_JOBS_MAX_ATTEMPTS="1",
            VOICEOPS_OOM_MAX_RETRIES="0",
            VOICEOPS_OOM_DEGRADE_THRESHOLD="1000",
            VOICEOPS_READINESS_STALL_SECONDS="1",
        ),
    )
    yield service
    service.stop()


def test_long_text_runs_as_a_job_with_progress(
    blank_page: Page, page_watch: PageWatch, jobs_web_service: ServiceProcess
) -> None:
    page = open_page(blank_page, jobs_web_service)
    expect(page.locator("#status-jobs")).to_have_text("on, up to 6000 characters")
    text = long_text(3)
    page.fill("#text", text)
    assert "runs as a job (up to 6000)" in page.inner_text("#counter")
    page.select_option("#format", "flac")  # a job answers wav or pcm: the page asks for wav
    speak_and_wait(page)
    parts = len(chunk_text(text))
    assert parts >= 3
    assert page.inner_text("#progress-label") == f"Job succeeded: {parts} of {parts} parts"
    assert page.get_attribute("#progress", "value") == str(parts)
    facts = audio_facts(page)
    assert facts["bytes"] > 44
    assert facts["duration"] > 0
    assert page.get_attribute("#download", "download") == "speech.wav"
    assert page.inner_text("#answer-engine") == "espeak"
    assert page.inner_text("#answer-tier") == "fallback"
    assert page.is_hidden("#error")
    assert page_watch.csp_violations(page) == []
    assert page_watch.errors() == []
    assert axe_violations(page) == []  # with the progress bar shown


def test_a_failed_job_is_a_readable_message(
    blank_page: Page, jobs_web_service: ServiceProcess
) -> None:
    page = open_page(blank_page, jobs_web_service)
    set_faults(jobs_web_service, oom_next_calls=1000)  # every engine call runs out of memory
    try:
        page.fill("#text", long_text(2))
        page.click("#speak")
        page.wait_for_selector("#error:not([hidden])", timeout=60_000)
    finally:
        clear_faults(jobs_web_service)
    message = page.inner_text("#error")
    assert message.startswith("The job failed: chunk "), message
    assert "giving up" in message
    assert page.is_hidden("#answer")


def test_not_ready_shows_its_reasons(blank_page: Page, jobs_web_service: ServiceProcess) -> None:
    page = open_page(blank_page, jobs_web_service)
    set_faults(jobs_web_service, engine_delay_seconds=5.0)  # stalled from 1 s to 5 s
    slow = threading.Thread(
        target=lambda: httpx.post(
            f"{jobs_web_service.url}{pod.PATH_SPEECH}",
            json={"model": "tts-1", "input": "A slow call."},
            timeout=30,
        )
    )
    slow.start()
    try:
        expect(page.locator("#status-ready")).to_have_text("no")
        reason = page.locator("#status-reasons li")
        expect(reason).to_contain_text("stalled: an engine call has run")
        expect(page.locator("#summary")).to_contain_text("Not ready (stalled)")
    finally:
        clear_faults(jobs_web_service)
        slow.join(timeout=30)
    expect(page.locator("#status-ready")).to_have_text("yes")
    expect(page.locator("#status-reasons li")).to_have_count(0)
