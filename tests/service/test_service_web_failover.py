"""The web page through the front Service shows the tier switch live during a failover.

Real: the Kubernetes control plane, the operator process, the ``voiceops-service``
pods of both tiers (VITS on the GPU tier, on CPU here; espeak on the fallback tier)
and headless Chromium (Debian's, driven by playwright). Test doubles: the node agent
(kubelet and kube-proxy; its Service proxy keeps an established connection on its
backend, as kube-proxy does) and the GPU (a fake libnvidia-ml.so.1), as in
``voiceops_localcluster.failover_cluster``; needs root for the pods' network namespaces.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect
from testsupport.needs import missing
from voiceops_localcluster import pod_network
from voiceops_localcluster.failover_cluster import failover_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
SWITCH_MS = 30_000
SCREENSHOT = Path(__file__).resolve().parents[2] / "build/web/failover.png"


async def speak(page: Page) -> None:
    await page.evaluate("document.getElementById('answer').hidden = true")
    await page.click("#speak")
    await page.wait_for_selector("#answer:not([hidden])", timeout=SWITCH_MS)


async def test_the_page_follows_a_failover_through_the_front_service(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        missing("the web UI tests need Debian's chromium (apt-get install -y chromium)")
    if (reason := pod_network.available()) is not None:
        missing(reason)
    async with (
        failover_cluster(tmp_path, 1) as cluster,
        async_playwright() as driver,
    ):
        browser = await driver.chromium.launch(executable_path=chromium)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            await page.goto(f"{cluster.front_url()}/web/")
            tier, engine = page.locator("#status-tier"), page.locator("#answer-engine")
            await expect(tier).to_have_text("gpu", timeout=SWITCH_MS)
            await speak(page)
            await expect(engine).to_have_text("vits")
            await expect(page.locator("#answer-tier")).to_have_text("gpu")

            await cluster.gpu_memory(0.99)
            await cluster.routed("FailedOver", "fallback")
            await expect(tier).to_have_text("fallback", timeout=SWITCH_MS)
            summary = page.locator("#summary")
            await expect(summary).to_contain_text("Tier changed from gpu to fallback")
            await speak(page)
            await expect(engine).to_have_text("espeak")
            await expect(page.locator("#answer-tier")).to_have_text("fallback")
            await expect(page.locator("#error")).to_be_hidden()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            await cluster.gpu_memory(None)
            await cluster.routed("Serving", "gpu")
            await expect(tier).to_have_text("gpu", timeout=SWITCH_MS)
            await expect(summary).to_contain_text("Tier changed from fallback to gpu")
        finally:
            await browser.close()
