"""The explorer: test questions with their image, options, description and each mode's answer."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from textonly.core.fileio import read_jsonl
from textonly.core.prompts import LETTERS
from textonly.data.images import load_image
from textonly.data.layout import IMAGES
from textonly.organism.worlds.text import oracle_description
from textonly.report.common import main_quality, main_scoring
from textonly.study.collect import order


def _image_tag(folder: Path, image_path: str, size: int = 96) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    load_image(folder, image_path).resize((size, size), Image.NEAREST).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" width="{size}" height="{size}" alt="test image">'


def explore(study, tables: dict, *, dataset: str, model: str | None = None, seed: int = 0, n: int = 12,
            only: str = "disagree", quality: str | None = None) -> str:
    """An HTML table of test questions: image, question, options (the answer marked), the
    description, and each mode's prediction (image condition, main scoring, one seed).
    ``only``: ``disagree`` (modes differ), ``wrong`` (text_only wrong) or ``all``."""
    runs = tables["runs"]
    if runs.empty:
        return "<p>No finished evaluation yet.</p>"
    runs = runs[(runs["dataset"] == dataset) & (runs["condition"] == "image") & (runs["scoring"] == main_scoring(runs))]
    model = model or (runs["model"].iloc[0] if len(runs) else None)
    quality = quality or main_quality(study, dataset)
    runs = runs[(runs["model"] == model) & (runs["seed"].isna() | (runs["seed"] == seed))
                & (runs["quality"].isna() | (runs["quality"] == quality))]
    predictions = {}
    for _, r in runs.sort_values("mode", key=order).iterrows():
        predictions[r["mode"]] = {p["id_"]: p for p in read_jsonl(study.dir / r["eval_dir"] / "predictions.jsonl")}
    if not predictions:
        return f"<p>No evaluation of {html.escape(str(model))} on {html.escape(dataset)}.</p>"
    test = study.split(dataset, "test")
    shown = oracle_description(quality) if quality else None  # real test images carry no description
    records = read_jsonl(test / "annotations.jsonl")
    modes = list(predictions)
    preferred, rest = [], []
    for r in records:
        got = [predictions[m].get(r["id_"]) for m in modes]
        if any(g is None for g in got):
            continue
        if only == "disagree":
            picked = len({g["prediction"] for g in got}) > 1
        elif only == "wrong":
            picked = not predictions.get("text_only", {}).get(r["id_"], {}).get("correct", True)
        else:
            picked = True
        (preferred if picked else rest).append(r)
    # too few questions pass the filter (a model that always answers alike): fill with the rest
    chosen = preferred[:n] + rest[: max(0, n - len(preferred))]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in modes)
    rows = []
    for r in chosen:
        options = "<br>".join(("<b>" if i == r["answer"] else "") + f"{LETTERS[i]}. {html.escape(o)}"
                              + ("</b>" if i == r["answer"] else "") for i, o in enumerate(r["options"]))
        description = html.escape((r.get("descriptions") or {}).get(shown, "–"))
        cells = []
        for m in modes:
            p = predictions[m][r["id_"]]
            letter = LETTERS[p["prediction"]] if p["prediction"] is not None else "?"
            cells.append(f"<td>{letter} {'✓' if p['correct'] else '✗'}</td>")
        image = _image_tag(test / IMAGES, r["image_path"]) if r["image_path"] else "–"
        rows.append(f"<tr><td>{image}</td><td>Type {r['question_type']}: {html.escape(r['question'])}<br>{options}</td>"
                    f"<td style='min-width:16em;font-size:0.85em'>{description}</td>{''.join(cells)}</tr>")
    caption = (f"{len(chosen)} question(s) of <code>{html.escape(dataset)}</code>, model "
               f"<code>{html.escape(str(model))}</code>, seed {seed}: {min(len(preferred), n)} of them pass the "
               f"filter <code>{html.escape(only)}</code> (of {len(preferred)} that do); the correct option in bold")
    return (f"<table class='explorer'><caption>{caption}</caption><thead><tr><th>image</th><th>question</th>"
            f"<th>description ({html.escape(shown or 'none')})</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
