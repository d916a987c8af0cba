"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright. The page
loads without console errors; a chat prompt streams an answer labelled with the expert the
router picked; pinning from the page changes /v1/experts; the routing explorer shows every
expert's score; each view's screenshot is saved under the test's temporary directory. Also the
routes the console reads, and --no-console."""

from __future__ import annotations

import shutil

import httpx
import pytest

from coe_fixture import start

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def console(coe_file):
    srv, ctx = start(coe_file)
    for rt in srv.runtimes.values():  # greedy by default, as a CoE file's sampling: can set: the same answer each run
        rt.sampling = {"temperature": 0.0}
    with ctx as url:
        yield srv, url.removesuffix("/v1")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("the console's browser tests need Chromium: apt-get install chromium (CI installs it)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, console):
    context = browser.new_context(viewport={"width": 1366, "height": 800})  # a laptop's screen
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(console[1] + "/")
    pg.errors = errors
    yield pg
    context.close()


def test_the_page_loads_without_errors_and_lists_the_models(page, tmp_path):
    page.wait_for_function("document.querySelectorAll('#chat-model option').length >= 4")
    options = page.locator("#chat-model option").all_inner_texts()
    assert options[0] == "coe (routed)" and {"sql", "shell", "general"} <= set(options)
    assert not page.locator("#key-form").is_visible()  # no key is set: none is asked for
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select, textarea')]
        .filter(e => !e.labels || e.labels.length === 0).map(e => e.id)""")
    assert unlabelled == []  # every control has a label a screen reader reads
    page.screenshot(path=tmp_path / "chat.png")
    assert page.errors == []


def test_a_chat_prompt_streams_an_answer_labelled_with_the_routed_expert(page, tmp_path):
    page.wait_for_function("document.querySelectorAll('#chat-model option').length >= 4")
    page.fill("#chat-input", "select name from users where id = 1")
    page.press("#chat-input", "Enter")
    label = page.locator("#messages li.assistant .label .expert")
    label.wait_for(timeout=30000)
    assert label.inner_text() == "sql"
    page.wait_for_function("!document.querySelector('#messages li.assistant').hasAttribute('aria-busy')",
                           timeout=60000)
    assert page.locator("#messages li.assistant .text").inner_text().strip()
    assert "TTFT" in page.locator("#messages li.assistant .label").inner_text()
    page.screenshot(path=tmp_path / "chat-answer.png")
    assert page.errors == []


def test_pinning_from_the_experts_view_changes_the_experts_route(page, console, tmp_path):
    url = console[1]
    assert not next(e for e in httpx.get(f"{url}/v1/experts").json()["data"] if e["name"] == "shell")["pinned"]
    page.click("#tab-experts")
    pin = page.get_by_role("button", name="Pin shell")
    pin.click()
    page.get_by_role("button", name="Unpin shell").wait_for(timeout=10000)
    assert next(e for e in httpx.get(f"{url}/v1/experts").json()["data"] if e["name"] == "shell")["pinned"]
    row = page.locator('#experts-table tr[data-expert="shell"]')
    assert "yes" in row.inner_text()
    page.screenshot(path=tmp_path / "experts.png")
    page.get_by_role("button", name="Unpin shell").click()
    page.get_by_role("button", name="Pin shell").wait_for(timeout=10000)
    assert page.errors == []


def test_the_routing_explorer_shows_every_experts_score(page, tmp_path):
    page.click("#tab-routing")
    page.fill("#route-input", "grep recursively for a word in bash")
    page.click("#route-form button[type=submit]")
    page.locator("#route-decision").wait_for(timeout=10000)
    assert "shell" in page.locator("#route-decision").inner_text()
    names = page.locator("#route-result .scores [role=listitem]").all_inner_texts()
    assert sorted(names) == ["general", "shell", "sql"]
    scores = [float(s) for s in page.locator("#route-result .score").all_inner_texts()]
    assert abs(sum(scores) - 1) < 0.01
    page.screenshot(path=tmp_path / "routing.png")
    assert page.errors == []


def test_the_charts_view_draws_each_chart(page, tmp_path):
    page.click("#tab-charts")
    page.wait_for_function("document.querySelectorAll('#view-charts svg').length == 5", timeout=15000)
    assert "Requests per second" in page.locator("#chart-rps svg").get_attribute("aria-label")
    page.screenshot(path=tmp_path / "charts.png")
    assert page.errors == []


def test_the_tabs_move_with_the_arrow_keys(page):
    page.focus("#tab-chat")
    page.keyboard.press("ArrowRight")
    assert page.locator("#tab-experts").get_attribute("aria-selected") == "true"
    assert page.locator("#view-experts").is_visible() and not page.locator("#view-chat").is_visible()


def test_route_and_stats_answer_what_the_console_shows(console):
    url = console[1]
    d = httpx.post(f"{url}/v1/route", json={"prompt": "select name from users where id = 1"}).json()
    assert d["expert"] == "sql" and {c["expert"] for c in d["candidates"]} == {"sql", "shell", "general"}
    assert httpx.post(f"{url}/v1/route", json={"prompt": 3}).json()["error"]["param"] == "prompt"
    httpx.post(f"{url}/v1/chat/completions", timeout=60,
               json={"model": "sql", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3})
    s = httpx.get(f"{url}/v1/stats").json()
    assert s["experts"]["sql"]["requests"] >= 1
    assert len(s["series"]["requests_per_s"]) == s["window_s"] // s["step_s"]
    assert s["series"]["requests_per_s"][-1] > 0 or s["series"]["requests_per_s"][-2] > 0


def test_with_an_api_key_the_page_asks_for_it_then_shows_the_models(browser, coe_file, tmp_path):
    srv, ctx = start(coe_file, api_key="sesame")
    with ctx as url:
        pg = browser.new_page()
        pg.goto(url.removesuffix("/v1") + "/")
        pg.locator("#key-form").wait_for(timeout=10000)
        assert "API key" in pg.locator("#key-why").inner_text()
        pg.fill("#key-input", "sesame")
        pg.click("#key-form button[type=submit]")
        pg.wait_for_function("document.querySelectorAll('#chat-model option').length >= 4", timeout=10000)
        assert not pg.locator("#key-form").is_visible()
        pg.screenshot(path=tmp_path / "key.png")
        pg.close()


def test_no_console_serves_no_page_and_a_key_guards_the_data_not_the_shell(coe_file):
    srv, ctx = start(coe_file, console=False)
    with ctx as url:
        assert httpx.get(url.removesuffix("/v1") + "/").status_code == 404
    srv, ctx = start(coe_file, api_key="k")
    with ctx as url:
        base = url.removesuffix("/v1")
        assert httpx.get(base + "/").status_code == 200  # the shell: no data in it
        assert httpx.get(base + "/v1/stats").status_code == 401
        assert httpx.post(base + "/v1/route", json={"prompt": "x"}).status_code == 401
