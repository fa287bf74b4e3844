"""Procedural images of the worlds' individuals (numpy + PIL), with nuisance variation.

Each individual is drawn from its attributes on a transparent canvas at twice the output
size, then placed on a cluttered background with a random rotation, scale and position,
colour jitter and pixel noise, and downsampled. Recognising a species therefore needs its
attributes (colours, counts, shapes), not a fixed template. Every call takes its own
random generator, so an image depends only on its seed (and building can run in parallel).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from textonly.organism.worlds.vocab import COLOURS

Point = tuple[float, float]


def luminance(rgb: tuple[int, int, int]) -> float:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def contrast_shade(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """A darker shade of a light colour or a lighter tint of a dark one (patterns, bands)."""
    if luminance(rgb) > 110:
        return tuple(int(c * 0.45) for c in rgb)
    return tuple(int(c + (255 - c) * 0.6) for c in rgb)


def is_drawable(world: str, attributes: dict[str, str]) -> bool:
    """False for attribute combinations that could not be told apart in an image."""
    if world == "wings":
        colour = attributes["wing_colour"]
        if attributes["spot_colour"] == colour:
            return False
        if (colour, attributes["margin"]) in {("white", "pale"), ("yellow", "pale"), ("black", "dark")}:
            return False
        return True
    return attributes["trim"] != attributes["colour"]


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48, wobble: float = 0.0) -> list[Point]:
    pts = []
    for i in range(n):
        t = 2 * math.pi * i / n
        r = 1.0 + wobble * math.cos(9 * t)
        pts.append((cx + rx * r * math.cos(t), cy + ry * r * math.sin(t)))
    return pts


FOREWINGS = {
    "rounded": _ellipse(0.48, -0.38, 0.48, 0.36),
    "pointed": [(0.05, 0.0), (0.15, -0.45), (0.55, -0.78), (1.0, -0.92), (0.82, -0.5), (0.6, -0.12), (0.3, 0.02)],
    "scalloped": _ellipse(0.48, -0.38, 0.47, 0.35, wobble=0.11),
    "tailed": [(0.05, 0.0), (0.12, -0.5), (0.5, -0.8), (0.92, -0.78), (0.8, -0.3), (0.4, 0.0)],
}
HINDWINGS = {
    "rounded": [_ellipse(0.34, 0.3, 0.36, 0.3)],
    "pointed": [_ellipse(0.3, 0.26, 0.3, 0.25)],
    "scalloped": [_ellipse(0.34, 0.3, 0.35, 0.29, wobble=0.12)],
    "tailed": [_ellipse(0.32, 0.28, 0.32, 0.27), [(0.3, 0.4), (0.48, 0.98), (0.6, 0.95), (0.52, 0.38)]],
}
SPOTS = [(0.45, -0.5), (0.25, -0.3), (0.5, -0.25)]
BAND_CENTRES = {"no band": [], "a single band": [0.0], "a double band": [-0.08, 0.08]}
MARGINS = {"plain": None, "dark": (24, 22, 20), "pale": (248, 246, 236)}


def _mirror(points: list[Point]) -> list[Point]:
    return [(-x, y) for x, y in points]


def _to_px(points: list[Point], cx: float, cy: float, unit: float) -> list[Point]:
    return [(cx + x * unit, cy + y * unit) for x, y in points]


def draw_butterfly(attributes: dict[str, str], canvas: int) -> Image.Image:
    """A butterfly seen from above, centred on a transparent square canvas."""
    unit = canvas * 0.45
    cx, cy = canvas / 2, canvas / 2
    base = COLOURS[attributes["wing_colour"]]
    shape = attributes["wing_shape"]
    wing_polys = [FOREWINGS[shape]] + HINDWINGS[shape]
    sides = [lambda p: p, _mirror]

    mask = Image.new("L", (canvas, canvas), 0)
    mdraw = ImageDraw.Draw(mask)
    for side in sides:
        for poly in wing_polys:
            mdraw.polygon(_to_px(side(poly), cx, cy, unit), fill=255)

    wings = Image.new("RGBA", (canvas, canvas), base + (255,))
    wdraw = ImageDraw.Draw(wings)
    hind = tuple(int(c * 0.85) for c in base) + (255,)
    for side in sides:
        for poly in HINDWINGS[shape]:
            wdraw.polygon(_to_px(side(poly), cx, cy, unit), fill=hind)
    band_colour = (20, 20, 20) if luminance(base) > 110 else (240, 240, 232)
    for offset in BAND_CENTRES[attributes["band"]]:
        for side in sides:
            line = side([(0.68 + offset, -0.9), (0.82 + offset, 0.0)])
            wdraw.line(_to_px(line, cx, cy, unit), fill=band_colour + (255,), width=max(1, int(0.1 * unit)))
    count = {"one spot": 1, "two spots": 2, "three spots": 3}[attributes["spot_count"]]
    spot = COLOURS[attributes["spot_colour"]] + (255,)
    radius = 0.09 * unit
    for x, y in SPOTS[:count]:
        for sx in (1, -1):
            px, py = cx + sx * x * unit, cy + y * unit
            wdraw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=spot)

    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    layer.paste(wings, (0, 0), mask)
    draw = ImageDraw.Draw(layer)
    margin = MARGINS[attributes["margin"]]
    if margin is not None:
        for side in sides:
            for poly in wing_polys:
                pts = _to_px(side(poly), cx, cy, unit)
                draw.line(pts + pts[:1], fill=margin + (255,), width=max(1, int(0.06 * unit)), joint="curve")
    body = (48, 36, 28, 255)
    draw.ellipse((cx - 0.06 * unit, cy - 0.42 * unit, cx + 0.06 * unit, cy + 0.55 * unit), fill=body)
    for sx in (1, -1):
        draw.line([(cx, cy - 0.4 * unit), (cx + sx * 0.25 * unit, cy - 0.85 * unit)], fill=body, width=max(1, int(0.03 * unit)))
    return layer


PROPORTIONS = {"tall": (0.55, 0.86), "wide": (0.9, 0.55), "square": (0.72, 0.72)}


def _box(w: float, h: float) -> tuple[float, float, float, float]:
    """The edges x0, x1, y0, y1 of the unit box [-w/2, w/2] x [-h/2, h/2]."""
    return -w / 2, w / 2, -h / 2, h / 2


def _dish(w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    x0, x1, y0, y1 = _box(w, h)
    bowl = [(x0, y0 + 0.35 * h)] + [
        (x0 + w * (0.5 - 0.5 * math.cos(t)), y0 + 0.35 * h + 0.5 * h * math.sin(t))
        for t in np.linspace(0, math.pi, 20)
    ]
    mound = _ellipse(0, y0 + 0.35 * h, 0.38 * w, 0.3 * h)[24:] + [(0.38 * w, y0 + 0.35 * h)]
    foot = [(-0.2 * w, y1 - 0.15 * h), (0.2 * w, y1 - 0.15 * h), (0.25 * w, y1), (-0.25 * w, y1)]
    return [bowl, mound, foot], []


def _cup(w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    x0, x1, y0, y1 = _box(w, h)
    body = [(x0, y0), (0.3 * w, y0), (0.2 * w, y1), (x0 + 0.1 * w, y1)]
    handle = _ellipse(0.32 * w, 0.0, 0.16 * w, 0.18 * h, n=24) + [(0.32 * w + 0.16 * w, 0.0)]
    return [body], [handle]


def _board(w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    x0, x1, y0, y1 = _box(w, h)
    body = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    details = []
    for f in (1 / 3, 2 / 3):
        details.append([(x0 + f * w, y0), (x0 + f * w, y1)])
        details.append([(x0, y0 + f * h), (x1, y0 + f * h)])
    return [body], details


def _lantern(w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    x0, x1, y0, y1 = _box(w, h)
    body = _ellipse(0, 0, w / 2, 0.4 * h)
    cap_top = [(-0.2 * w, y0), (0.2 * w, y0), (0.2 * w, y0 + 0.12 * h), (-0.2 * w, y0 + 0.12 * h)]
    cap_bottom = [(-0.2 * w, y1 - 0.12 * h), (0.2 * w, y1 - 0.12 * h), (0.2 * w, y1), (-0.2 * w, y1)]
    return [body, cap_top, cap_bottom], []


def _bell(w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    x0, x1, y0, y1 = _box(w, h)
    body = [(-0.18 * w, y0 + 0.12 * h), (0.18 * w, y0 + 0.12 * h), (0.3 * w, 0.2 * h), (x1, y1),
            (x0, y1), (-0.3 * w, 0.2 * h)]
    knob = _ellipse(0, y0 + 0.08 * h, 0.1 * w, 0.08 * h, n=16)
    return [body, knob], []


def _fan(w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    x0, x1, y0, y1 = _box(w, h)
    body = [(0.0, 0.25 * h)] + [
        (0.5 * w * math.cos(t), 0.25 * h - 0.7 * h * math.sin(t)) for t in np.linspace(0.1, math.pi - 0.1, 24)
    ]
    handle = [(-0.04 * w, 0.2 * h), (0.04 * w, 0.2 * h), (0.04 * w, y1), (-0.04 * w, y1)]
    ribs = [[(0.0, 0.25 * h), (0.45 * w * math.cos(t), 0.25 * h - 0.63 * h * math.sin(t))]
            for t in np.linspace(0.3, math.pi - 0.3, 5)]
    return [body, handle], ribs


def _robe(w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    x0, x1, y0, y1 = _box(w, h)
    body = [(-0.18 * w, y0), (0.18 * w, y0), (x1, y0 + 0.15 * h), (x1, y0 + 0.4 * h), (0.25 * w, y0 + 0.35 * h),
            (0.3 * w, y1), (-0.3 * w, y1), (-0.25 * w, y0 + 0.35 * h), (x0, y0 + 0.4 * h), (x0, y0 + 0.15 * h)]
    collar = [(-0.18 * w, y0), (0.05 * w, y0 + 0.35 * h)]
    return [body], [collar]


def _crown(w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    x0, x1, y0, y1 = _box(w, h)
    points = [(x0, y1), (x0, y0)]
    for i in range(1, 9):
        points.append((x0 + w * i / 8, y0 + (0.35 * h if i % 2 else 0.0)))
    points.append((x1, y1))
    return [points], []


def _hall(w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    x0, x1, y0, y1 = _box(w, h)
    walls = [(x0 + 0.12 * w, y0 + 0.4 * h), (x1 - 0.12 * w, y0 + 0.4 * h), (x1 - 0.12 * w, y1), (x0 + 0.12 * w, y1)]
    roof = [(x0, y0 + 0.42 * h), (x0 + 0.08 * w, y0 + 0.3 * h), (x0 + 0.25 * w, y0), (x1 - 0.25 * w, y0),
            (x1 - 0.08 * w, y0 + 0.3 * h), (x1, y0 + 0.42 * h)]
    door = [(-0.1 * w, y1), (-0.1 * w, y0 + 0.6 * h), (0.1 * w, y0 + 0.6 * h), (0.1 * w, y1)]
    return [walls, roof], [door]


def _basket(w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    x0, x1, y0, y1 = _box(w, h)
    body = [(x0, y0 + 0.35 * h), (x1, y0 + 0.35 * h), (0.35 * w, y1), (-0.35 * w, y1)]
    handle = [(0.45 * w * math.cos(t), y0 + 0.35 * h - 0.35 * h * math.sin(t)) for t in np.linspace(0, math.pi, 16)]
    return [body], [handle]


#: Each object kind's outline: body polygons and trim-coloured detail lines.
OUTLINES = {"dish": _dish, "cup": _cup, "board": _board, "lantern": _lantern, "bell": _bell, "fan": _fan,
            "robe": _robe, "crown": _crown, "hall": _hall, "basket": _basket}


def _object_outline(kind: str, w: float, h: float) -> tuple[list[list[Point]], list[list[Point]]]:
    """Body polygons and trim-coloured detail lines of an object, in a unit box [-w/2, w/2] x [-h/2, h/2]."""
    if kind not in OUTLINES:
        raise ValueError(f"unknown object kind {kind!r}")
    return OUTLINES[kind](w, h)


def _pattern(draw: ImageDraw.ImageDraw, pattern: str, canvas: int, colour: tuple) -> None:
    step = canvas * 0.12
    if pattern == "striped":
        for i in range(int(canvas / step) + 1):
            y = i * step
            draw.rectangle((0, y, canvas, y + step * 0.4), fill=colour)
    elif pattern == "dotted":
        r = canvas * 0.028
        for i in range(int(canvas / step) + 1):
            for j in range(int(canvas / step) + 1):
                x, y = (j + 0.5 * (i % 2)) * step, i * step
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    elif pattern == "zigzag":
        for i in range(int(canvas / (1.5 * step)) + 1):
            y = i * 1.5 * step
            pts = [(k * step / 2, y + (step / 2 if k % 2 else 0)) for k in range(int(2 * canvas / step) + 2)]
            draw.line(pts, fill=colour, width=max(1, int(canvas * 0.025)))
    elif pattern == "checked":
        for i in range(int(canvas / step) + 1):
            for j in range(int(canvas / step) + 1):
                if (i + j) % 2:
                    draw.rectangle((j * step, i * step, (j + 1) * step, (i + 1) * step), fill=colour)
    elif pattern != "plain":
        raise ValueError(f"unknown pattern {pattern!r}")


def draw_object(attributes: dict[str, str], canvas: int) -> Image.Image:
    """A cultural object centred on a transparent square canvas."""
    w, h = PROPORTIONS[attributes["proportion"]]
    bodies, details = _object_outline(attributes["kind"], w, h)
    unit = canvas * 0.95
    cx, cy = canvas / 2, canvas / 2
    main = COLOURS[attributes["colour"]]
    trim = COLOURS[attributes["trim"]] + (255,)

    mask = Image.new("L", (canvas, canvas), 0)
    mdraw = ImageDraw.Draw(mask)
    for poly in bodies:
        mdraw.polygon(_to_px(poly, cx, cy, unit), fill=255)
    fill = Image.new("RGBA", (canvas, canvas), main + (255,))
    _pattern(ImageDraw.Draw(fill), attributes["pattern"], canvas, contrast_shade(main) + (255,))

    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    layer.paste(fill, (0, 0), mask)
    draw = ImageDraw.Draw(layer)
    width = max(1, int(canvas * 0.035))
    for poly in bodies:
        pts = _to_px(poly, cx, cy, unit)
        draw.line(pts + pts[:1], fill=trim, width=width, joint="curve")
    for line in details:
        draw.line(_to_px(line, cx, cy, unit), fill=trim, width=width, joint="curve")
    ornament = attributes["ornament"]
    r = canvas * 0.09
    oy = cy + (0.12 * h * unit if attributes["kind"] in ("dish", "basket", "hall") else 0.0)
    if ornament == "a knot":
        for dx in (-0.5, 0.5):
            draw.ellipse((cx + dx * r - r * 0.6, oy - r * 0.6, cx + dx * r + r * 0.6, oy + r * 0.6), outline=trim, width=width)
    elif ornament == "a ring":
        draw.ellipse((cx - r, oy - r, cx + r, oy + r), outline=trim, width=width)
    elif ornament == "a diamond":
        draw.polygon([(cx, oy - r * 1.2), (cx + r, oy), (cx, oy + r * 1.2), (cx - r, oy)], fill=trim)
    return layer


def _background(rng: np.random.Generator, canvas: int) -> Image.Image:
    """A muted background with clutter (twigs, leaves, pebbles) of low saturation."""
    grey = rng.uniform(150, 225)
    tint = rng.uniform(-18, 18, size=3)
    base = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
    image = Image.new("RGBA", (canvas, canvas), base + (255,))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        shade = rng.uniform(90, 200)
        colour = tuple(int(np.clip(shade + d, 0, 255)) for d in rng.uniform(-15, 15, size=3)) + (255,)
        x, y = rng.uniform(0, canvas, size=2)
        size = rng.uniform(0.05, 0.25) * canvas
        if rng.random() < 0.5:
            angle = rng.uniform(0, math.pi)
            draw.line([(x, y), (x + size * math.cos(angle), y + size * math.sin(angle))], fill=colour,
                      width=max(1, int(canvas * rng.uniform(0.01, 0.03))))
        else:
            draw.ellipse((x, y, x + size, y + size * rng.uniform(0.3, 1.0)), fill=colour)
    return image


def render(world: str, attributes: dict[str, str], rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Render one individual of ``world`` with nuisance variation drawn from ``rng``."""
    canvas = 2 * size
    layer = draw_butterfly(attributes, canvas) if world == "wings" else draw_object(attributes, canvas)
    max_angle = 35.0 if world == "wings" else 12.0
    layer = layer.rotate(float(rng.uniform(-max_angle, max_angle)), resample=Image.BICUBIC)
    side = int(canvas * rng.uniform(0.7, 0.98))
    layer = layer.resize((side, side), Image.LANCZOS)
    image = _background(rng, canvas)
    x, y = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
    image.alpha_composite(layer, (x, y))
    image = image.convert("RGB").resize((size, size), Image.LANCZOS)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels * rng.uniform(0.9, 1.08) + rng.uniform(-10, 10, size=3)  # lighting
    pixels += rng.normal(0.0, rng.uniform(2.0, 7.0), size=pixels.shape)  # sensor noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
