"""The course website: built from the stored outputs (never re-run), served on loopback and driven in Chromium like a
reader: home page, the week navigation to a week-3 notebook with its plot and results table, a search, the language
switch. No page carries a solution. Screenshots go to `test-output/site/`."""

from __future__ import annotations

import functools
import html
import http.server
import re
import threading
import time
from pathlib import Path

import pytest

from llmcourse.errors import ConfigError
from llmcourse.teaching.notebooks import BEGIN, END, cell_source, cell_tags, read_notebook_json
from llmcourse.teaching.site import build_site, freeze_widgets
from llmcourse.teaching.syllabus import load_syllabus, project_root

ROOT = project_root()
OUT = ROOT / "test-output" / "site"
WEEK3 = "week03/03_quantization"
pytest.importorskip("sphinx", reason="the website needs the `site` extra: make setup installs it")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    start = time.perf_counter()
    folder = build_site(out=tmp_path_factory.mktemp("site") / "site")
    print(f"site built in {time.perf_counter() - start:.0f} s")
    return folder


@pytest.fixture(scope="module")
def served(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _text(page: Path) -> str:
    """What a reader reads on a page: its HTML without tags, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def _solution_lines(english: str) -> list[str]:
    """Distinctive lines of the notebook's solutions: those that appear nowhere else in the notebook."""
    cells = read_notebook_json(ROOT / english)["cells"]
    elsewhere = "\n".join(cell_source(c) for c in cells if "exercise" not in cell_tags(c))
    lines = []
    for c in cells:
        if "exercise" in cell_tags(c):
            inside = re.findall(rf"{re.escape(BEGIN)}\n(.*?)\n[ \t]*{re.escape(END)}", cell_source(c), re.S)
            lines += [ln.strip() for block in inside for ln in block.splitlines()
                      if len(ln.strip()) >= 20 and ln.strip() not in elsewhere]
    return lines


@pytest.mark.slow
def test_every_page_is_built_and_no_page_shows_a_solution(site):
    assert (site / "index.html").exists() and (site / "zh-CN" / "index.html").exists()
    checked = 0
    for entry in load_syllabus()["notebooks"]:
        english = entry.path
        for page in (site / english, site / "zh-CN" / english):
            page = page.with_suffix(".html")
            assert page.exists(), page
            text = _text(page)
            assert BEGIN not in text
            assert "YOUR CODE HERE" in text  # every notebook has exercises: the page shows their stubs
            for line in _solution_lines(english):
                assert line not in text, f"{page.relative_to(site)} shows a solution line: {line}"
                checked += 1
    assert checked > 100  # the solutions' distinctive lines were really looked for
    for path in site.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".ipynb", ".js", ".txt"):
            assert BEGIN not in path.read_text(encoding="utf-8", errors="replace"), path


def test_progress_bars_are_frozen_at_their_final_state():
    import nbformat

    nb = nbformat.from_dict(read_notebook_json(ROOT / "week02/01_tiny_gpt_from_scratch.ipynb"))
    assert freeze_widgets(nb) >= 1
    bars = [o["data"] for c in nb.cells for o in c.get("outputs", []) if "<progress" in o.get("data", {})
            .get("text/html", "")]
    assert bars and not any(re.search(r"(?<!\d)0%", b["text/plain"]) for b in bars)  # no frozen "0%"
    assert any("100%" in b["text/plain"] and "1400/1400" in b["text/plain"] for b in bars)


@pytest.mark.slow
@pytest.mark.browser
def test_a_reader_browses_searches_and_switches_language(served):
    # pages wait for DOMContentLoaded only: the Colab and Kaggle badge images live online and never load offline
    from playwright.sync_api import expect

    from llmcourse.teaching.browser import browser_page, chromium_path

    try:
        chromium_path()
    except ConfigError as exc:
        pytest.skip(str(exc))
    with browser_page(OUT) as page:
        page.goto(f"{served}/index.html", wait_until="domcontentloaded")
        expect(page.locator("main h1").first).to_contain_text("llmcourse")
        nav = page.get_by_role("navigation", name="Main")  # the week-by-week sidebar
        expect(nav.locator(".caption-text", has_text="Week 3: Small models on a small machine")).to_be_visible()
        page.screenshot(path=str(OUT / "01_home.png"))
        nav.get_by_role("link", name=re.compile(r"Week 3\.3")).first.click()
        page.wait_for_url(f"**/{WEEK3}.html", wait_until="domcontentloaded")
        expect(page.locator("main h1").first).to_contain_text("Quantization")
        plot = page.locator("main img[src*='_images']").first
        plot.scroll_into_view_if_needed()
        expect(plot).to_be_visible()
        assert plot.evaluate("img => img.naturalWidth") > 100  # the stored plot, not a broken image
        table = page.locator("main table", has_text="perplexity").last  # the notebook's closing results table
        table.scroll_into_view_if_needed()
        expect(table).to_be_visible()
        page.screenshot(path=str(OUT / "02_week3_notebook.png"))
        page.goto(f"{served}/search.html", wait_until="domcontentloaded")
        box = page.locator("main input[type='search'], main input[name='q']").first
        box.fill("perplexity")
        box.press("Enter")
        results = page.locator("#search-results a, ul.search a")
        expect(results.first).to_be_visible(timeout=15000)
        assert any("Week" in t for t in results.all_inner_texts())
        page.screenshot(path=str(OUT / "03_search.png"))
        page.goto(f"{served}/{WEEK3}.html", wait_until="domcontentloaded")
        page.get_by_role("link", name="中文", exact=True).first.click()
        page.wait_for_url(f"**/zh-CN/{WEEK3}.html", wait_until="domcontentloaded")
        assert re.search(r"[\u4e00-\u9fff]", page.locator("main h1").first.inner_text())
        page.get_by_role("link", name="English", exact=True).first.click()
        page.wait_for_url(f"**/{WEEK3}.html", wait_until="domcontentloaded")
        page.screenshot(path=str(OUT / "04_back_in_english.png"))
