"""Each published page also as an A4 PDF, for committee papers: printed by headless
Chromium (Playwright's `page.pdf`, the system browser, nothing downloaded) once the page's
charts are drawn, with the edition and page numbers in the footer. One browser prints all of
an edition's pages. Where Chromium is not installed, nothing is printed and the caller is
told in one line (the edition is published with its HTML pages alone).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Chromium fills the spans' classes in (pageNumber, totalPages); the footer has its own
# font size (it does not inherit the page's), and must fit within the bottom margin.
FOOTER = (
    '<div style="font-size:8px;width:100%;padding:0 12mm;display:flex;'
    'justify-content:space-between;font-family:system-ui,sans-serif">'
    "<span>{edition}</span>"
    '<span>Page <span class="pageNumber"></span> of <span class="totalPages"></span></span>'
    "</div>"
)
MARGIN = {"top": "14mm", "bottom": "16mm", "left": "12mm", "right": "12mm"}
DRAWN = (
    "Array.from(document.querySelectorAll('.plotly-graph-div'))"
    ".every(d => d.querySelector('.main-svg'))"
)


def no_pdf_reason() -> str | None:
    """Why no PDF can be printed on this machine (one line), or None."""
    if not CHROMIUM.exists():
        return f"no PDF printed: Chromium is not installed at {CHROMIUM}; HTML pages only"
    return None


def print_pdfs(pages: Iterable[Path], edition: str, timeout_ms: int = 60_000) -> list[Path]:
    """Print each HTML page to `<stem>.pdf` beside it (A4, backgrounds, the edition and
    'Page n of N' in the footer), in one browser; returns the PDFs. Raises if a page's
    charts do not draw within the timeout (an edition is whole or not published)."""
    from playwright.sync_api import sync_playwright

    footer = FOOTER.format(edition=html.escape(f"Edition {edition}"))
    printed = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(offline=True)  # the pages are self-contained
            page = context.new_page()
            for path in pages:
                page.goto(path.resolve().as_uri(), wait_until="load", timeout=timeout_ms)
                page.wait_for_function(DRAWN, timeout=timeout_ms)
                target = path.with_suffix(".pdf")
                page.pdf(
                    path=str(target),
                    format="A4",
                    print_background=True,
                    display_header_footer=True,
                    header_template="<span></span>",
                    footer_template=footer,
                    margin=MARGIN,
                )
                printed.append(target)
        finally:
            browser.close()
    return printed
