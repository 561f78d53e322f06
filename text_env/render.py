"""``render_mode="rgb_array"``: an episode's text drawn as an ``(H, W, 3)`` uint8 image.

The prompt is drawn in blue on white, the completion in dark red on a pale yellow band, so the two are told
apart by colour *and* background; a status line at the bottom gives the step count and, once the episode
has ended, its return. Text wraps at ``cols`` characters; a newline starts a new line; when the text needs
more lines than the frame holds, the earliest lines scroll off (like the observation window, the end is
kept). The frame size is fixed per env (video recorders need every frame the same size), a multiple of 16
pixels in both directions (what video encoders want).

Glyphs come from the DejaVu Sans Mono font that matplotlib (a dependency) ships, rasterised once per
character by Pillow and cached, so a frame is one numpy gather: no font is downloaded, and the same text gives
the same pixels. Without that font file, Pillow's built-in default font is used.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

BACKGROUND = (255, 255, 255)
PROMPT_FG = (30, 60, 170)  # blue
COMPLETION_FG = (170, 20, 20)  # dark red
COMPLETION_BG = (255, 244, 190)  # pale yellow band behind the completion
STATUS_FG = (90, 90, 90)
CURSOR_BG = (230, 200, 90)

FONT_SIZE = 13
_KINDS = np.array(  # (kind, fg/bg, rgb): 0 prompt, 1 completion, 2 status, 3 cursor
    [
        [PROMPT_FG, BACKGROUND],
        [COMPLETION_FG, COMPLETION_BG],
        [STATUS_FG, BACKGROUND],
        [COMPLETION_FG, CURSOR_BG],
    ],
    dtype=np.float32,
)


class UnsupportedRenderMode(ValueError, TypeError):
    """A ``render_mode`` the env does not offer. A ``ValueError`` (a bad value) that is also a
    ``TypeError``: SB3's ``make_vec_env`` and ``BaseAlgorithm`` first try ``render_mode="rgb_array"`` and
    retry without it only on ``TypeError``."""


def check_render_mode(render_mode: str | None, modes: list[str]) -> None:
    if render_mode is not None and render_mode not in modes:
        raise UnsupportedRenderMode(
            f"render_mode {render_mode!r} is not supported; expected one of {modes} or None"
        )


def _font_path() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSansMono.ttf"
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    path = _font_path()
    font = ImageFont.truetype(str(path), FONT_SIZE) if path is not None else ImageFont.load_default()
    left, _top, right, bottom = font.getbbox("Mg|_")
    width = max(1, math.ceil(font.getlength("M"))) if hasattr(font, "getlength") else right - left
    return font, width, max(1, bottom + 2)


class _Glyphs:
    """Character → alpha bitmap ``(cell_h, cell_w)`` uint8, rasterised on first use."""

    def __init__(self) -> None:
        self.font, self.cell_w, self.cell_h = _font()
        self.index: dict[str, int] = {" ": 0}
        self.bitmaps = [np.zeros((self.cell_h, self.cell_w), dtype=np.uint8)]
        self._stack: np.ndarray | None = None

    def ids(self, chars: str) -> list[int]:
        out = []
        for c in chars:
            i = self.index.get(c)
            if i is None:
                i = self.index[c] = len(self.bitmaps)
                self.bitmaps.append(self._raster(c))
                self._stack = None
            out.append(i)
        return out

    def _raster(self, c: str) -> np.ndarray:
        from PIL import Image, ImageDraw

        img = Image.new("L", (self.cell_w, self.cell_h), 0)
        ImageDraw.Draw(img).text((0, 0), c, font=self.font, fill=255)
        return np.asarray(img, dtype=np.uint8)

    @property
    def stack(self) -> np.ndarray:
        if self._stack is None:
            self._stack = np.stack(self.bitmaps)
        return self._stack


@lru_cache(maxsize=1)
def _glyphs() -> _Glyphs:
    return _Glyphs()


def _visible(c: str) -> str:
    """What a character is drawn as: tab → space, other control characters → ``·``."""
    if c == "\t":
        return " "
    if ord(c) < 32 or 0x7F <= ord(c) < 0xA0:
        return "\u00b7"
    return c


class TextRenderer:
    """Draws ``(prompt, completion, status)`` into a fixed ``(H, W, 3)`` uint8 frame.

    Args:
        cols: Characters per line.
        rows: Text lines (the status line comes on top of these).
    """

    def __init__(self, cols: int = 64, rows: int = 8) -> None:
        self.cols, self.rows = int(cols), int(rows)
        g = _glyphs()
        self.cell_w, self.cell_h = g.cell_w, g.cell_h
        self.pad = 4
        raw_h = (self.rows + 1) * self.cell_h + 2 * self.pad
        raw_w = self.cols * self.cell_w + 2 * self.pad
        self.height = -(-raw_h // 16) * 16
        self.width = -(-raw_w // 16) * 16

    @classmethod
    def for_env(cls, longest_prompt_chars: int, max_new_tokens: int, chars_per_token: int) -> TextRenderer:
        """A frame with room for the longest prompt and a full completion (at ``chars_per_token``), between
        4 and 24 text lines of 64 characters."""
        need = longest_prompt_chars + max_new_tokens * chars_per_token + 1
        return cls(cols=64, rows=min(24, max(4, -(-need // 64) + 1)))

    @classmethod
    def for_state(cls, state) -> TextRenderer:
        """The frame for an env's :class:`~text_env.engine.GenerationState`: its longest prompt and budget
        (a character tokenizer's token is one character; other tokenizers' are taken as 4)."""
        longest = max((len(str(p)) for p in state.prompts), default=0)
        per_token = 1 if type(state.tokenizer).__name__ == "CharTokenizer" else 4
        return cls.for_env(longest, state.max_new_tokens, per_token)

    def layout(self, prompt: str, completion: str, cursor: bool) -> tuple[list[list[str]], list[list[int]]]:
        """The lines of ``(characters, kinds)`` that are drawn (the last ``rows`` of them)."""
        lines: list[list[str]] = [[]]
        kinds: list[list[int]] = [[]]
        cells = [(c, 0) for c in prompt] + [(c, 1) for c in completion]
        if cursor:
            cells.append((" ", 3))
        for c, k in cells:
            if c == "\n":
                lines.append([])
                kinds.append([])
                continue
            if len(lines[-1]) == self.cols:
                lines.append([])
                kinds.append([])
            lines[-1].append(_visible(c))
            kinds[-1].append(k)
        return lines[-self.rows :], kinds[-self.rows :]

    def render(self, prompt: str, completion: str, status: str = "", cursor: bool = False) -> np.ndarray:
        g = _glyphs()
        rows, cols = self.rows + 1, self.cols
        ids = np.zeros((rows, cols), dtype=np.int64)
        kind = np.full((rows, cols), -1, dtype=np.int64)  # -1: empty cell (background)
        lines, kinds = self.layout(prompt, completion, cursor)
        for r, (chars, ks) in enumerate(zip(lines, kinds)):
            if chars:
                ids[r, : len(chars)] = g.ids("".join(chars))
                kind[r, : len(ks)] = ks
        status = status[:cols]
        if status:
            ids[rows - 1, : len(status)] = g.ids(status)
            kind[rows - 1, : len(status)] = 2
        alpha = g.stack[ids].astype(np.float32) / 255.0  # (rows, cols, ch, cw)
        colours = _KINDS[np.maximum(kind, 0)]  # (rows, cols, 2, 3)
        fg, bg = colours[:, :, 0], colours[:, :, 1]
        bg = np.where((kind >= 0)[..., None], bg, np.asarray(BACKGROUND, dtype=np.float32))
        a = alpha[..., None]  # (rows, cols, ch, cw, 1)
        cells = bg[:, :, None, None, :] + a * (fg - bg)[:, :, None, None, :]
        block = cells.transpose(0, 2, 1, 3, 4).reshape(rows * self.cell_h, cols * self.cell_w, 3)
        frame = np.empty((self.height, self.width, 3), dtype=np.uint8)
        frame[...] = BACKGROUND
        p = self.pad
        frame[p : p + block.shape[0], p : p + block.shape[1]] = np.rint(block).astype(np.uint8)
        return frame
