"""The HTML report: one self-contained, byte-stable page (verdict table first, a section per
subject, figures as inline SVG), the PNG files, and the page in a real headless Chromium
with the network off and JavaScript off."""

from __future__ import annotations

import base64
import io
import re
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_entries import diverged_entry, error_entry, renamed, subject_entry, table

from fa_checks.output import figures
from fa_checks.output import html as html_report

pytest.importorskip("matplotlib")


class Page(HTMLParser):
    """What the tests look at in a page: tags with their attributes, and the text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def entries():
    """Real subjects (a passing BP run; a DFA run whose D1 and D2 fire under the limits in
    force) and the ones training rarely gives: ERROR, no history, no credit."""
    from fa_checks.report import Thresholds

    bp = subject_entry("bp", 0)
    dfa = subject_entry("dfa", 1, thresholds=Thresholds(max_growth=1.0001, grad_floor=100.0))
    bare = renamed(subject_entry("bp", 0, credit=False, history=False), "runs/old-format.pt")
    return [bp, dfa, error_entry(), bare]


def render(entries, across_seeds=()):
    header, rows = table(entries)
    return html_report.render_html(entries, across_seeds, table_header=header, table_rows=rows)


SEEDS = [{"label": "dfa", "method": "dfa", "n": 3, "margins_pp": [-5.0, -2.0, 1.0],
          "mean_margin_pp": -2.0, "std_margin_pp": 3.0, "lower_bound_pp": -7.06,
          "confidence": 0.95, "threshold_pp": 2.0, "fires": True,
          "explanation": "dfa: mean D3 margin over 3 seeds is -2.0 pp (std 3.0); its one-sided "
                         "95% lower bound -7.1 pp is below the 2 pp threshold."}]


@pytest.fixture(scope="module")
def dozen(entries):
    """A dozen subjects and an across-seeds gate, as one page."""
    subjects = [renamed(entries[i % 2], f"{entries[i % 2]['id']}-{i}") for i in range(12)]
    return subjects, render(subjects, SEEDS)


# -- the page ----------------------------------------------------------------------------------
def test_the_verdict_table_comes_first_and_links_every_subject_to_its_section(entries):
    page = Page(render(entries))
    first_table = next(i for i, (tag, _) in enumerate(page.tags) if tag == "table")
    assert not [tag for tag, _ in page.tags[:first_table] if tag in ("figure", "svg", "section")]
    ids = {attrs["id"] for _, attrs in page.tags if "id" in attrs}
    links = [a["href"] for a in page.all("a") if a.get("href", "").startswith("#")]
    subject_links = [href for href in links if href != "#verdicts"]
    assert len(subject_links) == len(entries) == len(page.all("section"))
    assert {href[1:] for href in links} <= ids
    assert [s["id"] for s in page.all("section")] == html_report.anchors(entries)
    rows = [attrs.get("class") for attrs in page.all("tr")[1:]]
    assert rows == ["pass", "fail", "error", "pass"]


def test_the_table_of_the_one_renderer_links_and_marks_each_subject(entries):
    from fa_checks.output.render import HEADER, verdict_row
    from fa_checks.report import read_entries

    rows = [verdict_row(row) for row in read_entries(entries)]
    text = html_report.render_html(entries, table_header=HEADER, table_rows=rows)
    page = Page(text)
    assert "<thead><tr>" + "".join(f"<th>{h}</th>" for h in HEADER) + "</tr></thead>" in text
    links = [a["href"][1:] for a in page.all("a") if a.get("href", "") != "#verdicts"]
    assert links == html_report.anchors(entries)
    assert [attrs.get("class") for attrs in page.all("tr")[1:]] == ["pass", "fail", "error",
                                                                    "pass"]
    assert "ERROR: runs/broken.pt: not a checkpoint" in page.words


def test_each_subject_shows_its_figures_and_failing_sentences(entries):
    page_text = render(entries)
    page = Page(page_text)
    bp, dfa, error, bare = entries
    shown = [f["data-figure"] for f in page.all("figure")]
    assert shown == ["profile", "history", "credit", "profile", "history", "credit", "profile"]
    assert len(page.all("svg")) == len(shown)
    for key in ("D1", "D2"):
        assert f"{key}: {dfa[key]['explanation']}" in page.words
    assert html_report.failing_sentences(bp) == []
    assert "No diagnostic fired." in page.words
    assert html_report.failing_sentences(error) == [f"ERROR: {error['error']}"]
    assert f"ERROR: {error['error']}" in page.words
    assert "No figures: the subject could not be evaluated." in page.words
    missing = {m["data-missing"] for m in page.all("p") if "data-missing" in m}
    assert missing == {"history", "credit"}
    assert "Training history: no training history: the checkpoint records none." in page.words


def test_the_page_fetches_nothing_and_needs_no_script(entries):
    text = render(entries, SEEDS)
    page = Page(text)
    assert not page.all("script") and not page.all("link") and not page.all("img")
    assert not page.all("iframe") and not page.all("object")
    assert not re.search(r"https?://(?!www\.w3\.org/)", text)  # only the SVG namespaces
    assert not re.search(r"\bsrc=|@import|url\((?!#)", text)
    csp = [m["content"] for m in page.all("meta") if m.get("http-equiv")]
    assert csp and csp[0].startswith("default-src 'none'")


def test_the_page_is_byte_stable(entries):
    assert render(entries, SEEDS) == render(entries, SEEDS)


def test_ids_on_the_page_are_unique(dozen):
    _, text = dozen
    ids = [attrs["id"] for _, attrs in Page(text).tags if "id" in attrs]
    assert len(ids) == len(set(ids))


def test_a_dozen_subjects_fit_in_a_few_hundred_kilobytes(dozen, entries):
    _, text = dozen
    size = len(text.encode())
    one = len(render(entries[:1]).encode())
    print(f"\npage size: 1 subject {one} bytes, 12 subjects + across seeds {size} bytes")
    assert size < 450_000


def test_what_a_subject_id_holds_is_text_not_markup(entries):
    odd = renamed(entries[0], 'runs/<script>alert("x")</script>$a$.pt')
    text = render([odd])
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert odd["id"] in Page(text).words


def test_a_subject_id_in_any_script_stays_text_without_a_warning(entries):
    odd = renamed(entries[0], "运行/ԦΩ.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svg = html_report.figures_for_entry(odd)["profile"]
    assert "运行/ԦΩ.pt: scale stability (D1)</text>" in svg


def test_a_single_subject_and_an_empty_report_render(entries):
    single = Page(render(entries[:1]))
    assert len(single.all("section")) == 1 and "1 subject, 1 passed, 0 did not" in single.words
    empty = Page(render([]))
    assert not empty.all("section") and "0 subjects" in empty.words


def test_non_finite_subjects_render_and_say_what_is_not_drawn():
    entry = diverged_entry()
    page = Page(render([entry]))
    assert [f["data-figure"] for f in page.all("figure")] == ["profile", "history"]
    text = render([entry])
    assert "not drawn on the log axis: h_2" in text


def test_write_html_writes_the_page_atomically(entries, tmp_path):
    header, rows = table(entries)
    target = tmp_path / "out" / "fa-report.html"
    written = html_report.write_html(target, entries, table_header=header, table_rows=rows)
    assert written == target
    assert target.read_text(encoding="utf-8") == render(entries)
    assert [p.name for p in target.parent.iterdir()] == ["fa-report.html"]


def test_write_pngs_writes_every_figure_under_a_stable_name(entries, tmp_path):
    first = html_report.write_pngs(tmp_path / "a", entries, SEEDS, dpi=50)
    again = html_report.write_pngs(tmp_path / "b", entries, SEEDS, dpi=50)
    names = [p.name for p in first]
    anchors = html_report.anchors(entries)
    assert names == [f"{anchors[0]}-{n}.png" for n in ("profile", "history", "credit")] + [
        f"{anchors[1]}-{n}.png" for n in ("profile", "history", "credit")] + [
        f"{anchors[3]}-profile.png", "across-seeds.png"]
    for a, b in zip(first, again, strict=True):
        assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert a.read_bytes() == b.read_bytes()


def test_anchors_are_unique_and_safe():
    entries = [{"id": "runs/a b.pt"}, {"id": "runs/a b.pt"}, {"id": "../"}, {}]
    assert html_report.anchors(entries) == ["runs-a-b.pt", "runs-a-b.pt-2", "subject-3",
                                            "subject-4"]


def test_figures_for_entry_are_svg_for_a_pytest_html_extra(entries):
    svgs = html_report.figures_for_entry(entries[1])
    assert list(svgs) == ["profile", "history", "credit"]
    for svg in svgs.values():
        assert svg.startswith("<svg ") and svg.endswith("</svg>")
        assert 'aria-label="dfa-seed1: ' in svg
    fragment = html_report.subject_fragment(entries[1])
    assert fragment.count("<svg ") == 3 and "D1: " in fragment
    assert "<a " not in fragment  # no link: a fragment lives in someone else's page
    assert html_report.figures_for_entry(entries[2]) == {}


def test_the_svg_holds_the_reports_numbers_as_text(entries):
    """The growth written on the profile reads back from the SVG itself."""
    dfa = entries[1]
    svg = html_report.figures_for_entry(dfa)["profile"]
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    for growth in dfa["D1"]["per_block_growth"]:
        assert f"×{figures.fmt(growth)}" in texts


# -- in a real browser -------------------------------------------------------------------------
def chromium_or_skip() -> str:
    from chromium import find_chromium

    found = find_chromium()
    if found is None:
        pytest.skip("no Chromium to test the page in: install it with `apt-get install -y "
                    "chromium` (Debian), or point FA_CHECKS_CHROMIUM at a Chrome binary")
    return found


def blank(png: bytes) -> bool:
    """True when every pixel of the image has one colour."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    low, high = zip(*image.getextrema(), strict=True)
    return low == high


@pytest.mark.parametrize("javascript", [False, True], ids=["javascript-off", "javascript-on"])
def test_the_page_in_headless_chromium(dozen, tmp_path, javascript):
    from chromium import Chromium

    executable = chromium_or_skip()
    _, text = dozen
    page_path = tmp_path / "fa-report.html"
    page_path.write_text(text, encoding="utf-8")
    url = page_path.as_uri()
    with Chromium(executable) as browser:
        browser.open_page()
        for domain in ("Page", "Runtime", "Log", "Network", "DOM"):
            browser.send(f"{domain}.enable")
        browser.send("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
        browser.send("Emulation.setScriptExecutionDisabled", {"value": not javascript})
        browser.send("Page.navigate", {"url": url})
        browser.wait_for("Page.loadEventFired")

        root = browser.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]

        def select(selector: str) -> list[int]:
            return browser.send("DOM.querySelectorAll",
                                {"nodeId": root, "selector": selector})["nodeIds"]

        assert select("script") == []
        figures_ = select("figure svg")
        assert len(figures_) == Page(text).all("svg").__len__() == 12 * 3 + 1
        (body,) = select("body")
        page_width = browser.send("DOM.getBoxModel", {"nodeId": body})["model"]["width"]
        for node in figures_:
            model = browser.send("DOM.getBoxModel", {"nodeId": node})["model"]
            assert model["width"] > 100 and model["height"] > 50
            # the page's full width (the body's content box), not the half a newcomer saw
            assert model["width"] >= 0.9 * page_width, (model["width"], page_width)
            x, y = model["content"][0], model["content"][1]
            shot = browser.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": x, "y": y, "width": model["width"], "height": model["height"],
                         "scale": 0.5}})
            assert not blank(base64.b64decode(shot["data"])), "a figure drew nothing"
        lines = select("figure svg path[clip-path]")  # the data, clipped to their axes
        assert len(lines) >= len(figures_)

        shot = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"})["data"])
        assert not blank(shot)
        screenshot = tmp_path / "fa-report.png"
        screenshot.write_bytes(shot)
        print(f"\nscreenshot: {screenshot}")

        requests = [e["params"]["request"]["url"] for e in browser.events
                    if e["method"] == "Network.requestWillBeSent"]
        assert requests == [url]
        errors = [e for e in browser.events
                  if e["method"] == "Runtime.exceptionThrown"
                  or (e["method"] == "Runtime.consoleAPICalled"
                      and e["params"]["type"] in ("error", "assert"))
                  or (e["method"] == "Log.entryAdded"
                      and e["params"]["entry"]["level"] == "error")]
        assert errors == []


def test_a_failing_page_is_noticed_by_the_browser_test_helpers(tmp_path):
    """The checks above can fail: a page that fetches a stylesheet and logs an error is seen."""
    from chromium import Chromium

    executable = chromium_or_skip()
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="stylesheet" '
                   'href="https://cdn.example.invalid/x.css"></head><body>'
                   "<script>console.error('boom')</script></body></html>", encoding="utf-8")
    with Chromium(executable) as browser:
        browser.open_page()
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable")
        browser.send("Page.navigate", {"url": bad.as_uri()})
        browser.wait_for("Page.loadEventFired")
        shot = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"})["data"])
        methods = [e["method"] for e in browser.events]
        requested = [e["params"]["request"]["url"] for e in browser.events
                     if e["method"] == "Network.requestWillBeSent"]
    assert blank(shot)
    assert "https://cdn.example.invalid/x.css" in requested
    assert "Runtime.consoleAPICalled" in methods
    assert Path(bad).exists()
