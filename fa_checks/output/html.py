"""The visual report: one self-contained HTML page, and the same figures as PNG files.

The page opens with the verdict table (header and rows come from the caller's one table
renderer, so the page and the terminal agree), each subject linking to its section; then the
across-seeds gate, then one section per subject with the failing sentences and the figures of
:mod:`.figures` as inline SVG.  The page fetches nothing (no script, stylesheet, font
or image from anywhere), reads the same with JavaScript off (it has none), and is byte-stable:
the same entries give the same bytes.

Input is plain JSON data: *subject entries* (``Report.to_dict()`` plus ``id``, ``method``,
``seed``, ``path``, ``history``, ``error``) and *across-seeds entries*; non-finite numbers may
appear as "NaN", "Infinity", "-Infinity".  Nothing here raises on a missing or non-finite
figure: the page says what is missing.
"""

from __future__ import annotations

import contextlib
import html
import io
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import short_name, write_atomic
from ..report import MODE2_SENTENCE
from . import figures
from .comparison import comparison_section

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Entry = Mapping[str, Any]

DEFAULT_TITLE = "fa-checks report"

#: what each figure is called on the page
FIGURE_TITLES = {
    "profile": "Scale profile (D1)",
    "history": "Training history",
    "credit": "Credit per layer",
    "seeds": "D3 margin across seeds",
}

DIAGNOSTICS = ("D1", "D2", "D3", "D4")


# -- SVG ---------------------------------------------------------------------------------------
_ID = re.compile(r'\sid="([^"]*)"')
_REFERENCE = re.compile(r'(?:href="#|url\(#)([^")]+)')
_COORDINATES = re.compile(r'\s(d|x|y|transform|points)="([^"]*)"')
_LONG_DECIMAL = re.compile(r"(\d\.\d{2})\d+")


_FONT = "'DejaVu Sans', sans-serif"
_GROUP_TAG = re.compile(r"<g(\s[^>]*)?>|</g>")


def _flatten_groups(svg: str) -> str:
    """Drop every ``<g>`` without attributes (and its ``</g>``): matplotlib nests several per
    artist, and a group with no attribute changes nothing."""
    kept: list[bool] = []

    def visit(match: re.Match[str]) -> str:
        tag = match.group(0)
        if tag == "</g>":
            return tag if kept.pop() else ""
        keep = bool(match.group(1) and match.group(1).strip())
        kept.append(keep)
        return tag if keep else ""

    return _GROUP_TAG.sub(visit, svg)


_MARKER_RUN = re.compile(
    r'<use xlink:href="#[^"]+" x="[^"]*" y="[^"]*" style="(?P<style>[^"]*)"/>'
    r'(?:<use xlink:href="#[^"]+" x="[^"]*" y="[^"]*" style="(?P=style)"/>)+'
)


def _group_markers(match: re.Match[str]) -> str:
    style = match.group("style")
    uses = match.group(0).replace(f' style="{style}"/>', "/>")
    return f'<g style="{style}">{uses}</g>'


def _lean(svg: str) -> str:
    """matplotlib's SVG without what a page does not need: the XML prologue, whitespace between
    tags, ids nothing refers to (they would also repeat across figures), groups without
    attributes, styles said twice, and coordinates past 1/100 pt."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>|<!--.*?-->", "", svg, flags=re.S)
    svg = re.sub(r">\s+<", "><", svg)
    referenced = set(_REFERENCE.findall(svg))
    svg = _ID.sub(lambda m: m.group(0) if m.group(1) in referenced else "", svg)
    svg = _flatten_groups(svg)
    # a marker's <use> repeats the style its <path> already has
    styles = dict(re.findall(r'<path id="([^"]+)" d="[^"]*" style="([^"]*)"', svg))
    svg = re.sub(r'(<use xlink:href="#([^"]+)"[^>]*?) style="([^"]*)"',
                 lambda m: m.group(1) if styles.get(m.group(2)) == m.group(3) else m.group(0),
                 svg)
    # a line's markers share one style: say it once, on a group (fill and stroke inherit)
    svg = _MARKER_RUN.sub(_group_markers, svg)
    svg = re.sub(r' transform="rotate\(-?0 [^"]*\)"', "", svg)
    # one font for every text, said once
    family = re.escape(_FONT)
    svg = re.sub(rf"font-family: {family};? ?", "", svg)
    svg = svg.replace("<defs>", f"<defs><style>text{{font-family: {_FONT}}}</style>", 1)

    def shorten(match: re.Match[str]) -> str:
        value = _LONG_DECIMAL.sub(r"\1", match.group(2))
        return f' {match.group(1)}="{" ".join(value.split())}"'

    return _COORDINATES.sub(shorten, svg).strip()


@contextlib.contextmanager
def _quiet_glyphs() -> Iterator[None]:
    """No warning for a subject id in a script the font lacks: the SVG keeps it as text,
    which the browser draws with its own fonts."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Glyph .* missing from font")
        yield


def figure_svg(figure: Figure, key: str, *, label: str = "") -> str:
    """``figure`` as an inline ``<svg>`` element, byte-stable for the same figure and ``key``.

    ``key`` salts the ids matplotlib gives clip paths and markers, so that several figures on
    one page never share an id: give each figure of a page its own.  ``label`` is the figure's
    accessible name.
    """
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({**figures.STYLE, "svg.hashsalt": key}), _quiet_glyphs():
        figure.savefig(buffer, format="svg",
                       metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = _lean(buffer.getvalue())
    name = html.escape(label or key, quote=True)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{name}" ', 1)


def figure_png(figure: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """``figure`` as a PNG file, written atomically (no software or date stamp: byte-stable)."""
    import matplotlib

    def save(tmp: Path) -> None:
        with matplotlib.rc_context(figures.STYLE), _quiet_glyphs():
            figure.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})

    return write_atomic(path, save, suffix=".png")


# -- subjects ----------------------------------------------------------------------------------
def subject_id(entry: Entry, index: int = 0) -> str:
    """The subject's id as the table shows it (``subject-N`` when the entry has none)."""
    subject = entry.get("subject") if isinstance(entry.get("subject"), Mapping) else {}
    return str(entry.get("id") or subject.get("id") or f"subject-{index + 1}")


def anchors(entries: Sequence[Entry]) -> list[str]:
    """A stable, unique name per subject, for links and PNG names: the id with all but ``.``,
    ``_``, ``-``, letters and digits turned into ``-``, shortened with a digest when long."""
    taken: set[str] = set()
    names = []
    for index, entry in enumerate(entries):
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", subject_id(entry, index)).strip("-.")
        base = short_name(base or f"subject-{index + 1}", subject_id(entry, index))
        name, k = base, 2
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name)
        names.append(name)
    return names


def is_error(entry: Entry) -> bool:
    """A subject that could not be evaluated (verdict ``ERROR``, or an ``error`` sentence)."""
    from ..report import is_error_entry

    return is_error_entry(entry) or bool(entry.get("error"))


def failing_sentences(entry: Entry) -> list[str]:
    """The sentences of what fired, as :meth:`fa_checks.report.Report.failing_sentences` words
    them (the entries reaching the page were read as reports already); an ERROR subject's one
    sentence."""
    from ..report import Report

    if is_error(entry):
        return [f"ERROR: {entry.get('error') or 'the subject could not be evaluated'}"]
    return Report.from_dict(entry).failing_sentences()


def all_sentences(entry: Entry) -> list[tuple[str, str]]:
    """Every diagnostic's sentence, fired or not: ``[(name, sentence), ...]``."""
    out = []
    for key in DIAGNOSTICS:
        section = entry.get(key)
        if isinstance(section, Mapping) and section.get("explanation"):
            out.append((key, str(section["explanation"])))
    credit = entry.get("credit")
    if isinstance(credit, Mapping) and credit.get("explanation"):
        out.append(("credit", str(credit["explanation"])))
    return out


def subject_figures_svg(entry: Entry, key: str) -> dict[str, str]:
    """The subject's figures as inline SVG, by name (none for an ERROR subject)."""
    if is_error(entry):
        return {}
    out = {}
    for name, figure in figures.subject_figures(entry).items():
        label = f"{subject_id(entry)}: {FIGURE_TITLES[name]}"
        out[name] = figure_svg(figure, f"{key}-{name}", label=label)
    return out


def figures_for_entry(entry: Entry) -> dict[str, str]:
    """One subject's figures as inline SVG by name (``profile``, ``history``, ``credit``; only
    those with something to show), e.g. for a pytest-html extra."""
    return subject_figures_svg(entry, anchors([entry])[0])


# -- the page ----------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
margin:1.5rem auto;max-width:60rem;padding:0 1rem;color:#1d1d1d;line-height:1.4}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2.2rem;border-top:1px solid #ccc;
padding-top:1rem}h3{font-size:1rem;margin:1.2rem 0 .3rem}
table.verdicts{border-collapse:collapse;font-size:.85rem;font-variant-numeric:tabular-nums}
table.verdicts th,table.verdicts td{border-bottom:1px solid #ddd;padding:.25rem .6rem;
text-align:left;white-space:nowrap}
tr.fail td{background:#fbeaea}tr.error td{background:#fff4d6}
.verdict{font-weight:bold}.verdict.pass{color:#2e8540}.verdict.fail{color:#c0262d}
.verdict.error{color:#8a5a00}
ul.failing li{color:#8d1c21}p.missing{color:#555;font-style:italic}
p.meta{color:#444;font-size:.9rem}
figure{margin:.6rem 0}figure svg{width:100%;height:auto;display:block}
figcaption{font-size:.85rem;color:#444}
details{font-size:.9rem;margin:.6rem 0}nav a,a.back{font-size:.85rem}
""".strip()


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _verdict_class(text: str) -> str:
    upper = text.strip().upper()
    if upper.startswith("PASS"):
        return "pass"
    if upper.startswith("FAIL"):
        return "fail"
    if upper.startswith("ERROR"):
        return "error"
    return ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], links: Mapping[str, str]
           ) -> str:
    """The verdict table; a cell holding a subject's id links to its section (each id once)."""
    unlinked = dict(links)
    lines = ['<table class="verdicts" id="verdicts"><thead><tr>']
    lines += [f"<th>{_e(h)}</th>" for h in header]
    lines.append("</tr></thead><tbody>")
    for row in rows:
        cells = [str(c) for c in row]
        # the verdict is the last cell that reads as one (an id may start with "PASS")
        kind = next((k for k in map(_verdict_class, reversed(cells)) if k), "")
        linked = next((c for c in cells if c in unlinked), None)
        lines.append(f'<tr class="{kind}">' if kind else "<tr>")
        for cell in cells:
            if cell == linked:
                lines.append(f'<td><a href="#{_e(unlinked.pop(cell))}">{_e(cell)}</a></td>')
                linked = None
            elif _verdict_class(cell):
                lines.append(f'<td class="verdict {_verdict_class(cell)}">{_e(cell)}</td>')
            else:
                lines.append(f"<td>{_e(cell)}</td>")
        lines.append("</tr>")
    lines.append("</tbody></table>")
    return "".join(lines)


def _percent(value: Any) -> str:
    number = figures.number(value)
    if number is None:
        return "n/a"
    return f"{100 * number:.1f}%" if math.isfinite(number) else figures.fmt(number)


def _meta(entry: Entry) -> str:
    parts = []
    for label, key in (("method", "method"), ("seed", "seed")):
        if entry.get(key) is not None:
            parts.append(f"{label} {_e(entry.get(key))}")
    if not is_error(entry):
        parts.append(f"test accuracy {_e(_percent(entry.get('test_acc')))}")
        if entry.get("num_samples"):
            parts.append(f"diagnostics on {_e(entry.get('num_samples'))} eval samples")
    if entry.get("path"):
        parts.append(f"<code>{_e(entry.get('path'))}</code>")
    return " · ".join(parts)


def _figure_block(name: str, svg: str) -> str:
    return (f'<figure class="fa-figure" data-figure="{_e(name)}">{svg}'
            f"<figcaption>{_e(FIGURE_TITLES.get(name, name))}</figcaption></figure>")


def subject_section(entry: Entry, anchor: str, *, index: int = 0, heading: str = "h2",
                    back_link: bool = True) -> str:
    """One subject's section: verdict, facts, failing sentences, figures, what is missing."""
    verdict = str(entry.get("verdict") or ("ERROR" if is_error(entry) else "?"))
    kind = _verdict_class(verdict)
    out = [f'<section class="subject" id="{_e(anchor)}">',
           f'<{heading}><span class="verdict {kind}">{_e(verdict)}</span> '
           f"{_e(subject_id(entry, index))}</{heading}>"]
    meta = _meta(entry)
    if meta:
        out.append(f'<p class="meta">{meta}</p>')
    if entry.get("mode1") is True:
        out.append('<p class="meta"><strong>Mode 1:</strong> the residual stream exploded (D1) '
                   "and the BP reference collapsed (D2): a cosine against BP means nothing "
                   "here.</p>")
    if entry.get("mode2") is True:  # MODE2_SENTENCE without its "mode 2: "
        out.append(f'<p class="meta"><strong>Mode 2:</strong> {_e(MODE2_SENTENCE[8:])}.</p>')
    failing = failing_sentences(entry)
    if failing:
        out.append('<ul class="failing">' + "".join(f"<li>{_e(s)}</li>" for s in failing)
                   + "</ul>")
    elif not is_error(entry):
        out.append('<p class="passing">No diagnostic fired.</p>')
    if is_error(entry):
        out.append('<p class="missing">No figures: the subject could not be evaluated.</p>')
    else:
        for name, svg in subject_figures_svg(entry, anchor).items():
            out.append(_figure_block(name, svg))
        for name, why in figures.missing_figures(entry).items():
            out.append(f'<p class="missing" data-missing="{_e(name)}">'
                       f"{_e(FIGURE_TITLES[name])}: {_e(why)}.</p>")
        sentences = all_sentences(entry)
        if sentences:
            out.append("<details><summary>Every diagnostic's sentence</summary><ul>"
                       + "".join(f"<li><strong>{_e(k)}</strong>: {_e(s)}</li>"
                                 for k, s in sentences) + "</ul></details>")
    if back_link:
        out.append('<p><a class="back" href="#verdicts">back to the table</a></p>')
    out.append("</section>")
    return "".join(out)


def subject_fragment(entry: Entry) -> str:
    """One subject's section as a stand-alone fragment (own styling, no ids shared with a
    page), e.g. for ``pytest_html.extras.html``."""
    style = ("<style>.fa-checks figure svg{width:100%;height:auto;display:block}"
             ".fa-checks .failing li{color:#8d1c21}.fa-checks .missing{font-style:italic}"
             "</style>")
    anchor = "fa-" + anchors([entry])[0]
    section = subject_section(entry, anchor, heading="h3", back_link=False)
    return f'<div class="fa-checks">{style}{section}</div>'


def _seeds_section(summaries: Sequence[Entry]) -> str:
    if not summaries:
        return ""
    figure = figures.across_seeds(summaries)
    svg = figure_svg(figure, "across-seeds", label=FIGURE_TITLES["seeds"])
    items = []
    for summary in summaries:
        fires = summary.get("fires") is True
        kind = "fail" if fires else "pass"
        name = str(summary.get("label") or summary.get("method") or "?")
        sentence = str(summary.get("explanation") or "")
        if not sentence.startswith(f"{name}:"):  # the gate's own sentences name the method
            sentence = f"{name}: {sentence}"
        items.append(f'<li><span class="verdict {kind}">{"FAIL" if fires else "PASS"}</span> '
                     f"{_e(sentence)}</li>")
    return ('<section id="across-seeds"><h2>Across seeds</h2><ul>' + "".join(items) + "</ul>"
            + _figure_block("seeds", svg) + "</section>")


def render_html(
    entries: Sequence[Entry],
    across_seeds: Sequence[Entry] = (),
    *,
    table_header: Sequence[str], table_rows: Sequence[Sequence[str]],
    title: str = DEFAULT_TITLE, comparison: Mapping[str, Any] | None = None,
) -> str:
    """The page: the verdict table (``table_header`` / ``table_rows``, cells as text; a cell
    equal to a subject's id links to its section), the across-seeds gate, then a section per
    subject.  Self-contained and byte-stable."""
    entries = [e for e in entries if isinstance(e, Mapping)]
    names = anchors(entries)
    links: dict[str, str] = {}
    for index, (entry, anchor) in enumerate(zip(entries, names, strict=True)):
        links.setdefault(subject_id(entry, index), anchor)
    failed = sum(1 for e in entries if e.get("verdict") != "PASS")
    summary = (f"{len(entries)} subject{'s' if len(entries) != 1 else ''}, "
               f"{len(entries) - failed} passed, {failed} did not")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        # no request of any kind, even if a figure were to name one
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1><p class=\"meta\">{_e(summary)}</p>",
        _table(table_header, table_rows, links),
        comparison_section(comparison),
        _seeds_section(list(across_seeds)),
    ]
    parts += [subject_section(entry, anchor, index=index)
              for index, (entry, anchor) in enumerate(zip(entries, names, strict=True))]
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)


def write_html(
    path: str | Path,
    entries: Sequence[Entry],
    across_seeds: Sequence[Entry] = (),
    *,
    table_header: Sequence[str],
    table_rows: Sequence[Sequence[str]],
    title: str = DEFAULT_TITLE, comparison: Mapping[str, Any] | None = None,
) -> Path:
    """:func:`render_html` written atomically to ``path`` (UTF-8)."""
    page = render_html(entries, across_seeds, table_header=table_header,
                       table_rows=table_rows, title=title, comparison=comparison)
    return write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"), suffix=".html")


def write_pngs(
    folder: str | Path,
    entries: Sequence[Entry],
    across_seeds: Sequence[Entry] = (),
    *,
    dpi: int = 150,
) -> list[Path]:
    """Every figure as a PNG file in ``folder`` (created if missing): ``<subject>-profile.png``,
    ``<subject>-history.png``, ``<subject>-credit.png`` (those with something to show; the
    subject named as in :func:`anchors`) and ``across-seeds.png``.  Returns the paths written."""
    target = Path(folder)
    written = []
    entries = [e for e in entries if isinstance(e, Mapping)]
    for entry, anchor in zip(entries, anchors(entries), strict=True):
        if is_error(entry):
            continue
        for name, figure in figures.subject_figures(entry).items():
            written.append(figure_png(figure, target / f"{anchor}-{name}.png", dpi=dpi))
    if across_seeds:
        figure = figures.across_seeds(list(across_seeds))
        written.append(figure_png(figure, target / "across-seeds.png", dpi=dpi))
    return written


__all__ = [
    "DEFAULT_TITLE",
    "anchors",
    "failing_sentences",
    "figure_png",
    "figure_svg",
    "figures_for_entry",
    "render_html",
    "subject_fragment",
    "write_html",
    "write_pngs",
]
