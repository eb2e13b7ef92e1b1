"""A small flowing page layout for PDF reports: measured text wrapping and pagination.

matplotlib places text at fixed positions and never wraps or breaks pages, so long text
runs off the page. :class:`Flow` keeps a cursor that moves down an A4 page; every block
(text, table, image row, chart) measures its height first and starts a new page when
it does not fit. Text is wrapped by the width of the words in the font actually used
(measured with the Agg renderer at 72 dpi, so one pixel is one PDF point), never by a
character count, and a paragraph that does not fit continues on the next page line by
line: nothing is cut or hidden.

All coordinates are PDF points (1/72 inch) from the top-left corner of the page. Text is
drawn with ``parse_math=False`` (a ``$`` in a command line is not mathtext) and saved
with ``pdf.fonttype`` 42 (TrueType), so the PDF text is searchable and copyable.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["A4_POINTS", "Flow", "Section", "text_width", "wrap_text"]

#: A4 portrait in points.
A4_POINTS = (595.0, 842.0)
_LEADING = 1.32  # line height / font size
_SLACK = 0.985  # measured word widths ignore kerning across spaces: keep a small margin


@lru_cache(maxsize=1)
def _renderer() -> Any:
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(8, 8, 72)


@lru_cache(maxsize=65536)
def text_width(text: str, size: float, weight: str = "normal") -> float:
    """Width in points of ``text`` in matplotlib's default font at ``size`` points."""
    from matplotlib.font_manager import FontProperties

    if not text:
        return 0.0
    width, _, _ = _renderer().get_text_width_height_descent(
        text, FontProperties(size=size, weight=weight), ismath=False)
    return float(width)


def _split_long_word(word: str, width: float, size: float, weight: str) -> list[str]:
    """Break a word wider than ``width`` into the longest pieces that fit."""
    pieces: list[str] = []
    while word:
        lo, hi = 1, len(word)
        while lo < hi:  # largest prefix that fits (at least one character)
            mid = (lo + hi + 1) // 2
            if text_width(word[:mid], size, weight) <= width:
                lo = mid
            else:
                hi = mid - 1
        pieces.append(word[:lo])
        word = word[lo:]
    return pieces


def wrap_text(text: str, width: float, size: float, weight: str = "normal") -> list[str]:
    """Greedy word wrap of ``text`` to lines no wider than ``width`` points.

    Explicit newlines start new lines; runs of spaces collapse to one. A word wider than
    the whole line is broken into pieces (the only case where a word is split).

    Returns:
        The lines (an empty paragraph gives one empty line).
    """
    limit = width * _SLACK
    space = text_width(" ", size, weight) or size * 0.3
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        words = paragraph.split()
        if not words:
            lines.append("")
            continue
        line: list[str] = []
        used = 0.0
        for word in words:
            w = text_width(word, size, weight)
            if w > limit:
                if line:
                    lines.append(" ".join(line))
                *full, word = _split_long_word(word, limit, size, weight)
                lines.extend(full)
                line, used = [word], text_width(word, size, weight)
                continue
            extra = w + (space if line else 0.0)
            if line and used + extra > limit:
                lines.append(" ".join(line))
                line, used = [word], w
            else:
                line.append(word)
                used += extra
        lines.append(" ".join(line))
    return lines


@dataclass
class Section:
    """A named part of a document and the pages it spans (0-based, end exclusive)."""

    name: str
    first_page: int
    end_page: int

    @property
    def n_pages(self) -> int:
        """Number of pages the section spans."""
        return self.end_page - self.first_page


class Flow:
    """Top-to-bottom layout over A4 pages (matplotlib figures), paginating as it goes.

    Args:
        margin: Page margin in points (all sides); the footer sits inside the bottom one.
        footer: Text of the running footer; ``"Page k of n"`` is appended when saving.
    """

    def __init__(self, margin: float = 42.0, footer: str = "") -> None:
        self.width, self.height = A4_POINTS
        self.margin = margin
        self.footer = footer
        self.pages: list[Any] = []
        self._sections: list[Section] = []
        self.y = 0.0
        self.new_page()

    # ------------------------------------------------------------------ geometry
    @property
    def text_width(self) -> float:
        """Usable width of a line in points."""
        return self.width - 2 * self.margin

    @property
    def bottom(self) -> float:
        """Lowest y a block may reach."""
        return self.height - self.margin

    @property
    def room(self) -> float:
        """Height left on the current page in points."""
        return self.bottom - self.y

    def _fx(self, x: float) -> float:
        return x / self.width

    def _fy(self, y: float) -> float:
        return 1.0 - y / self.height

    @property
    def fig(self) -> Any:
        """The current page."""
        return self.pages[-1]

    # ------------------------------------------------------------------ pages
    def new_page(self) -> None:
        """Start a new page; the cursor goes to the top margin."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(self.width / 72, self.height / 72))
        FigureCanvasAgg(fig)
        self.pages.append(fig)
        self.y = self.margin

    def ensure(self, height: float) -> None:
        """Start a new page unless ``height`` points fit below the cursor (a block taller
        than a whole page starts at the top of a fresh page, then continues)."""
        if height > self.room and self.y > self.margin:
            self.new_page()

    def section(self, name: str, new_page: bool = False) -> None:
        """Begin a named section (optionally on a fresh page); :attr:`sections` records
        the pages each one spans."""
        if self._sections:
            self._sections[-1].end_page = len(self.pages)
        if new_page and self.y > self.margin:
            self.new_page()
        self._sections.append(Section(name, len(self.pages) - 1, len(self.pages)))

    @property
    def sections(self) -> list[Section]:
        """The named sections so far; the last one runs to the current page."""
        if self._sections:
            self._sections[-1].end_page = len(self.pages)
        return list(self._sections)

    def space(self, points: float) -> None:
        """Vertical gap (dropped at the top of a page)."""
        if self.y > self.margin:
            self.y = min(self.y + points, self.bottom)

    # ------------------------------------------------------------------ text
    def line_height(self, size: float) -> float:
        """Baseline-to-baseline distance in points for text of ``size`` points."""
        return size * _LEADING

    def text(self, text: str, size: float = 9.0, *, weight: str = "normal", color: str = "black",
             indent: float = 0.0, keep_with: float = 0.0) -> int:
        """A wrapped paragraph; lines that do not fit continue on the next page.

        Args:
            text: The text (newlines start new lines).
            size: Font size in points.
            weight: ``"normal"`` or ``"bold"``.
            color: Text colour.
            indent: Left indent in points.
            keep_with: Height in points that must fit after the first line (a heading keeps
                itself with the start of what follows it).

        Returns:
            Number of lines drawn.
        """
        lines = wrap_text(text, self.text_width - indent, size, weight)
        step = self.line_height(size)
        self.ensure(step + keep_with)
        for line in lines:
            self.ensure(step)
            self.y += step
            if line:
                self.fig.text(self._fx(self.margin + indent), self._fy(self.y - 0.25 * size), line,
                              fontsize=size, weight=weight, color=color, parse_math=False)
        return len(lines)

    def heading(self, text: str, size: float = 12.0, keep_with: float = 40.0) -> None:
        """A bold heading kept on the page with at least ``keep_with`` points after it."""
        self.space(size * 0.6)
        self.text(text, size, weight="bold", keep_with=keep_with)
        self.space(size * 0.25)

    def bullets(self, items: list[str], size: float = 9.0, indent: float = 10.0) -> None:
        """A bulleted list: each item wrapped with a hanging indent."""
        for item in items:
            lines = wrap_text(item, self.text_width - indent - 8, size)
            step = self.line_height(size)
            for i, line in enumerate(lines):
                self.ensure(step)
                self.y += step
                base = self._fy(self.y - 0.25 * size)
                if i == 0:
                    self.fig.text(self._fx(self.margin + indent - 1), base, "•", fontsize=size, parse_math=False)
                self.fig.text(self._fx(self.margin + indent + 8), base, line, fontsize=size, parse_math=False)

    # ------------------------------------------------------------------ table
    def table(self, columns: list[tuple[str, float]], rows: list[list[str]], size: float = 8.0) -> None:
        """A table with wrapped cells; rows never split, the header repeats on new pages.

        Args:
            columns: ``(title, share of the line width)`` per column (shares sum to 1).
            rows: Cell texts, one list per row.
            size: Font size of the cells.
        """
        total = sum(share for _, share in columns)
        widths = [self.text_width * share / total for _, share in columns]
        pad = 3.0
        step = self.line_height(size)

        def cells(values: list[str], weight: str) -> list[list[str]]:
            return [wrap_text(str(v), w - 2 * pad, size, weight) for v, w in zip(values, widths)]

        header = cells([title for title, _ in columns], "bold")
        header_h = max(len(c) for c in header) * step + 2 * pad

        def draw(wrapped: list[list[str]], height: float, weight: str, shade: str | None) -> None:
            from matplotlib.patches import Rectangle

            if shade:
                self.fig.add_artist(Rectangle(
                    (self._fx(self.margin), self._fy(self.y + height)), self.text_width / self.width,
                    height / self.height, transform=self.fig.transFigure, facecolor=shade, edgecolor="none",
                    zorder=0))
            x = self.margin
            for lines, w in zip(wrapped, widths):
                for i, line in enumerate(lines):
                    if line:
                        self.fig.text(self._fx(x + pad), self._fy(self.y + pad + (i + 1) * step - 0.25 * size), line,
                                      fontsize=size, weight=weight, parse_math=False)
                x += w
            self.y += height
            self._rule()

        self.ensure(header_h + step + 2 * pad)
        draw(header, header_h, "bold", "#e8ecef")
        for row in rows:
            wrapped = cells(row, "normal")
            height = max(len(c) for c in wrapped) * step + 2 * pad
            if height > self.room:
                self.new_page()
                draw(header, header_h, "bold", "#e8ecef")
            draw(wrapped, height, "normal", None)

    def _rule(self, color: str = "#b0b7bd") -> None:
        from matplotlib.lines import Line2D

        y = self._fy(self.y)
        self.fig.add_artist(Line2D([self._fx(self.margin), self._fx(self.width - self.margin)], [y, y],
                                   transform=self.fig.transFigure, color=color, linewidth=0.5))

    # ------------------------------------------------------------------ images and charts
    def image_row(self, images: list[tuple[np.ndarray | None, str]], height: float, gap: float = 14.0) -> None:
        """Images side by side with their titles above; ``None`` draws a framed placeholder
        whose title says why there is no image.

        Args:
            images: ``(uint8 image (H, W) or (H, W, 3), title)`` per slot.
            height: Height of the image area in points (each image keeps its aspect ratio).
            gap: Horizontal gap between images in points.
        """
        n = len(images)
        slot = (self.text_width - gap * (n - 1)) / n
        title_size = 9.0
        titles = [wrap_text(t, slot, title_size) for _, t in images]
        title_h = max(len(t) for t in titles) * self.line_height(title_size)
        self.ensure(title_h + height + 4)
        top = self.y
        for k, ((img, _), title_lines) in enumerate(zip(images, titles)):
            x = self.margin + k * (slot + gap)
            for i, line in enumerate(title_lines):
                self.fig.text(self._fx(x), self._fy(top + (i + 1) * self.line_height(title_size) - 2), line,
                              fontsize=title_size, parse_math=False)
            y0 = top + title_h + 4
            if img is None:
                w, h = slot, height
            else:
                ih, iw = img.shape[:2]
                scale = min(slot / iw, height / ih)
                w, h = iw * scale, ih * scale
            ax = self.fig.add_axes((self._fx(x), self._fy(y0 + h), w / self.width, h / self.height))
            ax.set_xticks([])
            ax.set_yticks([])
            if img is not None:
                ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
        self.y = top + title_h + 4 + height

    def bars(self, values: dict[str, float], highlight: str, threshold: float, xlabel: str,
             size: float = 8.0) -> None:
        """Horizontal probability bars (one per class) with the threshold as a dashed line."""
        labels = list(values)
        label_w = max(text_width(lab, size) for lab in labels) + 8
        height = 16.0 * len(labels) + 6
        xlabel_lines = wrap_text(xlabel, self.text_width - label_w, size)
        ticks = size + 8  # tick marks and their labels below the axes
        total = height + ticks + len(xlabel_lines) * self.line_height(size)
        self.ensure(total)
        left = self.margin + label_w
        ax = self.fig.add_axes((self._fx(left), self._fy(self.y + height),
                                (self.text_width - label_w - 30) / self.width, height / self.height))
        vals = [float(values[k]) for k in labels]
        ax.barh(range(len(labels)), vals, color=["#c0392b" if k == highlight else "#95a5a6" for k in labels])
        ax.axvline(threshold, color="#2c3e50", linestyle="--", linewidth=1.2)
        ax.set_xlim(0, 1)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels([])
        ax.tick_params(labelsize=size - 1)
        for i, (lab, v) in enumerate(zip(labels, vals)):
            y = self.y + 3 + (i + 0.5) * (height - 6) / len(labels) + 0.35 * size
            self.fig.text(self._fx(self.margin), self._fy(y), lab, fontsize=size, parse_math=False)
            ax.text(min(v + 0.01, 0.9), i, f"{v:.3f}", va="center", fontsize=size, parse_math=False)
        self.y += height + ticks
        for line in xlabel_lines:
            self.y += self.line_height(size)
            self.fig.text(self._fx(left), self._fy(self.y - 0.25 * size), line, fontsize=size, parse_math=False)

    # ------------------------------------------------------------------ output
    def to_pdf(self, title: str) -> bytes:
        """Add the running footer (``footer · Page k of n``) and save every page as one PDF.

        Returns:
            PDF bytes: TrueType fonts (searchable text), no author or producer in the metadata.
        """
        import matplotlib
        from matplotlib.backends.backend_pdf import PdfPages

        n = len(self.pages)
        for k, fig in enumerate(self.pages, start=1):
            label = f"{self.footer} · Page {k} of {n}" if self.footer else f"Page {k} of {n}"
            fig.text(self._fx(self.margin), self._fy(self.height - self.margin / 2), label,
                     fontsize=7.5, color="#444444", parse_math=False)
        buf = io.BytesIO()
        with matplotlib.rc_context({"pdf.fonttype": 42}):
            with PdfPages(buf, metadata={"Title": title, "Author": None, "Creator": "medcnn",
                                         "Producer": None}) as pdf:
                for fig in self.pages:
                    pdf.savefig(fig)
        return buf.getvalue()
