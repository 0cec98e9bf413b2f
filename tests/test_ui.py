"""The web UI in a real browser: Debian's Chromium driven by Playwright, against a real uvicorn server on real
clips. Upload, search with an edited copy, Compare (heat map, players that seek together), escaping of a
hostile file name, a rejected upload's reason, keys on and off, keyboard and phone width.

With HAPVR_WRITE_SCREENSHOTS=1 (`make screenshots`) the Search and Compare screenshots the README shows are
written to docs/.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from bench.service_procs import free_port, service_env, start_api, wait_job
from tests.clips import ASL, BIKES, BOTTLE, CAR, PEOPLE, ROOT, clip, faststart, variant
from tests.videos import write_png

CHROMIUM = "/usr/bin/chromium"
XSS = "<img src=x onerror=alert(1)>.mp4"
TIMEOUT_MS = 120_000
expect.set_options(timeout=TIMEOUT_MS)  # indexing a clip on 2 busy cores takes seconds, not Playwright's 5


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


def serve(tmp: Path, **env):
    environment = service_env(tmp / "data", free_port(), None, **env)
    api, client = start_api(environment, tmp / "api.log")
    return api, client, f"http://127.0.0.1:{environment['HAPVR_PORT']}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    api, client, url = serve(root)
    yield {"root": root, "url": url, "client": client}
    client.close()
    api.kill(signal.SIGTERM)


def new_page(browser, url: str, width: int = 1280):
    context = browser.new_context(viewport={"width": width, "height": 900}, base_url=url)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    alerts: list[str] = []
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.alerts, page.errors = alerts, errors
    return page


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def unlabelled_controls(page) -> list[str]:
    """Inputs, buttons and links a screen reader could not name."""
    return page.evaluate("""() => [...document.querySelectorAll('input, button, a, select, textarea')]
        .filter(e => e.offsetParent !== null)
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML.slice(0, 80))""")


def screenshot(page, name: str, tmp: Path, height: int = 900) -> None:
    path = tmp / name
    full = page.evaluate("document.documentElement.scrollHeight")
    page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": min(full, height)})
    if os.environ.get("HAPVR_WRITE_SCREENSHOTS") == "1":  # a 256-colour PNG: a third of the bytes
        Image.open(path).convert("RGB").quantize(256).save(ROOT / "docs" / name, optimize=True)


def test_upload_search_compare_in_the_browser(browser, server):
    root, url = server["root"], server["url"]
    hostile = root / XSS
    shutil.copy(clip(PEOPLE), hostile)
    rejected = root / "holiday.mp4"  # a picture named like a video
    rejected.write_bytes(write_png(root / "holiday.png").read_bytes())
    cut = root / "cut.mp4"  # its header probes fine, its frames end early: the job fails
    cut.write_bytes(faststart(BOTTLE, root).read_bytes()[:200_000])
    page = new_page(browser, url)

    # Library: three clips, the hostile name and a rejected file, uploaded together
    page.goto("/#/library")
    page.set_input_files("#upload-files", [str(clip(BIKES)), str(clip(CAR)), str(clip(ASL)), str(hostile),
                                           str(rejected), str(cut)])
    uploads = page.locator("#uploads li")
    expect(uploads).to_have_count(6)
    for name in (BIKES, CAR, ASL, XSS):
        expect(uploads.filter(has_text=name).locator(".state")).to_have_text("indexed")
    reason = uploads.filter(has_text="holiday.mp4").locator(".error")
    expect(reason).to_contain_text("rejected")
    expect(reason).to_contain_text("holiday.mp4")
    expect(uploads.filter(has_text="cut.mp4").locator(".error")).to_contain_text("truncated")
    expect(page.locator(".video-row")).to_have_count(4)
    # the hostile name is text wherever it shows: in the upload list as the browser gave it, and in the
    # library as an external id and metadata sent through the API (the server keeps those as they are)
    expect(page.locator("#uploads li .source", has_text=XSS)).to_have_count(1)
    r = server["client"].post("/index", files=[("files", ("clip.mp4", clip(PEOPLE).read_bytes(), "video/mp4"))],
                              data={"external_id": XSS, "metadata": '{"note": "<b onmouseover=alert(2)>x</b>"}',
                                    "force": "true"})
    assert r.status_code == 202, r.text
    page.wait_for_timeout(100)
    page.reload()
    expect(page.locator(".video-row a.source", has_text=XSS)).to_have_count(1, timeout=60_000)
    expect(page.locator(".video-row", has_text="<b onmouseover=alert(2)>x</b>")).to_have_count(1)
    assert page.locator("img[src='x'], b[onmouseover]").count() == 0 and not page.alerts
    assert not unlabelled_controls(page), unlabelled_controls(page)
    page.fill("#library-q", "bikes")
    page.click("form[role=search] button")
    expect(page.locator(".video-row")).to_have_count(1)
    expect(page.locator(".video-row .source")).to_have_text(BIKES)
    images_loaded = page.evaluate("() => [...document.querySelectorAll('.video-row img')].every(i => i.naturalWidth > 0)")
    assert images_loaded

    # Search with an edited copy (re-encoded at 320 px, with a caption): its source comes first
    page.goto("/#/search")
    page.set_input_files("#query-file", str(variant(BIKES, 7, root)))
    first = page.locator(".card").first
    expect(first.locator(".source")).to_have_text(BIKES)
    expect(page.locator(".card")).not_to_have_count(0)
    expect(first.locator(".timeline .span").first).to_be_visible()
    assert "confidence" in first.locator(".confidence").inner_text()
    assert "null" not in first.inner_text() and "undefined" not in first.inner_text()
    page.wait_for_function("() => [...document.querySelectorAll('.card .strip img')].every(i => i.complete && i.naturalWidth > 0)")
    screenshot(page, "ui-search.png", root)

    # Compare: the heat map is drawn, a click on a segment seeks both players
    first.get_by_role("link", name="Compare").click()
    canvas = page.locator("#heatmap")
    expect(canvas).to_be_visible()
    colours = page.evaluate("""() => { const c = document.getElementById('heatmap');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const seen = new Set();
        let lit = 0; for (let i = 0; i < d.length; i += 4) { if (d[i] + d[i+1] + d[i+2] > 0) lit++;
        seen.add((d[i] << 16) | (d[i+1] << 8) | d[i+2]); } return {lit, total: d.length / 4, distinct: seen.size}; }""")
    assert colours["lit"] > 0.9 * colours["total"] and colours["distinct"] > 20, colours
    page.wait_for_function("() => ['player-query', 'player-match'].every(id => document.getElementById(id).readyState >= 1)")
    segment = page.locator("button.segment").first
    expect(segment).to_be_visible()
    times = page.evaluate("() => [document.getElementById('player-query').duration, document.getElementById('player-match').duration]")
    assert all(t > 5 for t in times), times  # both players hold real video
    # the matched span's start (the edited copy and its source line up from the start): seek elsewhere first
    page.evaluate("() => { document.getElementById('player-query').currentTime = 7; document.getElementById('player-match').currentTime = 8; }")
    segment.focus()
    page.keyboard.press("Enter")  # keyboard reachable
    page.wait_for_function("() => document.getElementById('player-match').classList.contains('seeked')")
    positions = page.evaluate("() => [document.getElementById('player-query').currentTime, document.getElementById('player-match').currentTime]")
    assert positions[0] < 2.0 and positions[1] < 2.0, positions
    expect(page.locator("#pairs figure")).not_to_have_count(0)
    page.wait_for_function("() => ['player-query', 'player-match'].every(id => { const v = document.getElementById(id); "
                           "return !v.seeking && v.readyState >= 2; })")
    screenshot(page, "ui-compare.png", root, height=1500)
    assert not page.errors, page.errors

    # phone width: nothing scrolls sideways, the players stack
    page.set_viewport_size({"width": 375, "height": 800})
    assert no_horizontal_scroll(page)
    for view in ("#/library", "#/search", "#/jobs"):
        page.goto(f"/{view}")
        page.wait_for_function(f"() => document.body.dataset.ready === '{view[2:]}'")
        assert no_horizontal_scroll(page), view

    # Jobs: the index jobs are listed with their states, the failed one with its error code
    expect(page.locator("tr.job.done")).not_to_have_count(0)
    failed = page.locator("tr.job.failed", has_text="cut.mp4")
    expect(failed).to_contain_text("truncated")
    assert "uploads/" not in failed.inner_text()  # the file as the user named it, never a server path
    expect(page.locator("#health")).to_contain_text("worker")
    assert not page.alerts and not page.errors, (page.alerts, page.errors)


def test_duplicate_sets_in_the_browser(browser, server):
    client = server["client"]
    copy = variant(BIKES, 7, server["root"])  # the edited copy searched with above, now indexed too
    r = client.post("/index", files=[("files", (copy.name, copy.read_bytes(), "video/mp4"))])
    wait_job(client, r.json()["jobs"][0]["job_id"])
    page = new_page(browser, server["url"])
    page.goto("/#/duplicates")
    page.click("#dup-run")
    bikes = page.locator(".dup-set").filter(has_text=BIKES)
    expect(bikes).to_have_count(1)
    expect(bikes.locator(".video-row")).to_have_count(2)
    expect(bikes).to_contain_text(copy.name)
    expect(page.locator(".dup-set")).to_have_count(1)  # nothing unrelated is grouped
    bikes.get_by_role("link", name="Compare").click()
    expect(page.locator("#heatmap")).to_be_visible()
    expect(page.locator("button.segment")).not_to_have_count(0)
    assert not page.errors, page.errors


def test_keyboard_reaches_every_view(browser, server):
    page = new_page(browser, server["url"])
    page.goto("/#/search")
    page.wait_for_function("() => document.body.dataset.ready === 'search'")
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.id || document.activeElement.textContent.trim()"))
    assert {"Search", "Library", "Jobs", "query-file"} <= set(reached), reached
    assert not unlabelled_controls(page)


def test_delete_asks_first(browser, server, tmp_path):
    page = new_page(browser, server["url"])
    page.goto("/#/library?q=asl")
    row = page.locator(".video-row")
    expect(row).to_have_count(1)
    row.get_by_role("button").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.click("#confirm-no")
    expect(row).to_have_count(1)  # cancelled: still there
    row.get_by_role("button").click()
    page.click("#confirm-yes")
    expect(page.locator(".video-row")).to_have_count(0)
    assert server["client"].get("/videos", params={"q": "asl"}).json()["total"] == 0


def test_keys_on_the_ui_asks_once_and_keeps_the_key_out_of_urls(browser, tmp_path):
    """Also: a server that keeps no uploads, where Compare shows key frames instead of players."""
    key = "k3y-" + "x" * 20
    api, client, url = serve(tmp_path, HAPVR_API_KEYS=key, HAPVR_KEEP_UPLOADS="false")
    try:
        page = new_page(browser, url)
        page.goto("/#/library")
        expect(page.locator("#key-dialog")).to_be_visible()
        page.fill("#key-input", "wrong")
        page.click("#key-form button")
        expect(page.locator("#key-error")).to_have_text("That key was not accepted.")
        page.fill("#key-input", key)
        page.click("#key-form button")
        expect(page.locator("#key-dialog")).to_be_hidden()
        page.set_input_files("#upload-files", [str(clip(CAR))])
        expect(page.locator("#uploads .state")).to_have_text("indexed")
        expect(page.locator(".video-row")).to_have_count(1)
        # thumbnails load through the session cookie (an <img> sends no header)
        page.wait_for_function("() => [...document.querySelectorAll('.video-row img')].every(i => i.complete && i.naturalWidth > 0)")
        assert key not in page.url
        # a state-changing request riding on the cookie alone is refused (no CSRF)
        status = page.evaluate("() => fetch('/videos/x', {method: 'DELETE'}).then(r => r.status)")
        assert status == 401
        cookies = page.context.cookies()
        assert all(key not in c["value"] for c in cookies)
        assert any(c["name"] == "hapvr_session" and c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies)
        # a reload keeps the tab signed in, without asking again
        page.reload()
        page.wait_for_function("() => document.body.dataset.ready === 'library'")
        expect(page.locator("#key-dialog")).to_be_hidden()
        assert key not in (tmp_path / "api.log").read_text()

        # a video's page: its facts, key frames and nearest neighbours; Compare without kept sources
        page.set_input_files("#upload-files", [str(variant(CAR, 5, tmp_path))])
        expect(page.locator("#uploads .state").last).to_have_text("indexed")
        page.locator(".video-row a.source", has_text="variant5").click()
        expect(page.locator(".facts")).to_contain_text("sha256")
        expect(page.locator(".strip.wrap img")).not_to_have_count(0)
        neighbour = page.locator("#neighbours li", has_text=CAR)
        expect(neighbour).to_have_count(1)
        neighbour.get_by_role("link", name="Compare").click()
        expect(page.locator("#heatmap")).to_be_visible()
        expect(page.locator(".player .hint").first).to_contain_text("not kept")
        assert page.locator("video").count() == 0
        still = page.locator("img#player-match")
        page.locator("button.segment").first.click()
        expect(still).to_have_attribute("data-time", re.compile(r"^\d"))
        page.wait_for_function("() => document.getElementById('player-match').naturalWidth > 0")
    finally:
        client.close()
        api.kill(signal.SIGTERM)


def test_pages_carry_a_policy_without_inline_script_and_docs_work_offline(browser, server):
    client = server["client"]
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "<script>" not in page.text  # every script is a file
    docs = new_page(browser, server["url"])
    requests: list[str] = []
    docs.on("request", lambda r: requests.append(r.url))
    docs.goto("/docs")
    expect(docs.locator(".swagger-ui .info .title")).to_contain_text("hapvr")
    expect(docs.locator(".opblock-summary-path", has_text="/query").first).to_be_visible()
    outside = [r for r in requests if not r.startswith((server["url"], "blob:", "data:"))]
    assert not outside, outside
