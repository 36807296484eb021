"""HTML pieces of the report page: headings with anchors, the table of contents, foldable blocks and tables
that wrap inside the page. The summary notebook displays them; nbconvert copies them into report.html."""
from __future__ import annotations

import html

import pandas as pd

# (anchor, title) of the report's sections, in page order: the table of contents and the headings share it
SECTIONS = [("findings", "Findings"), ("scorecard", "Reproduction scorecard"),
            ("claims", "The seed reports' claims, tested"), ("problems", "Runs with problems"),
            ("results", "Results by notebook"), ("provenance", "How this report was made")]
TITLES = dict(SECTIONS)


def heading(anchor: str) -> str:
    return f'<h2 id="{anchor}">{html.escape(TITLES[anchor])}</h2>'


def contents() -> str:
    links = " · ".join(f'<a href="#{anchor}">{html.escape(title)}</a>' for anchor, title in SECTIONS)
    return f'<nav id="contents" style="margin: 0.3em 0 0.6em 0"><b>Contents:</b> {links}</nav>'


def details(summary: str, body: str, opened: bool = False) -> str:
    """A block the reader folds open or shut; summary is HTML."""
    return (f'<details{" open" if opened else ""} style="margin: 0.5em 0"><summary style="cursor: pointer">'
            f"{summary}</summary>{body}</details>")


def table(frame: pd.DataFrame, precision: int | None = None, nowrap=()) -> str:
    """A table whose long cells wrap (but the `nowrap` columns), left-aligned, scrolling inside its own box if
    it is still too wide."""
    styler = frame.style.hide(axis="index").set_properties(**{"text-align": "left", "white-space": "normal",
                                                              "vertical-align": "top"})
    styler = styler.set_table_styles([{"selector": "th", "props": [("text-align", "left")]}])
    if nowrap:
        styler = styler.set_properties(subset=[c for c in nowrap if c in frame], **{"white-space": "nowrap"})
    if precision is not None:
        styler = styler.format(precision=precision)
    return f'<div style="max-width: 100%; overflow-x: auto">{styler.to_html()}</div>'
