"""Draw the README's before/after picture: the tiny SD without and with the outline style LoRA.

Run from the repository root:

    python docs/make_readme_figure.py

It trains the outline LoRA with the course's small preset (rank 8, 300 steps, as lesson 06 does)
unless ``runs/readme`` already holds it (a few minutes on a 2-core CPU), then draws the four
held-out prompts, combinations of colour and shape the LoRA never saw, on one seed each:
the base model on the top row, the same prompt and seed with the LoRA on the bottom row.
The 64x64 pictures are enlarged 3x with nearest-neighbour so that the pixels stay sharp.
The result is ``docs/images/before_after.png``.

Left out: several seeds, other scales (lesson 07 has sliders for those).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lorakit import formats, inject, models, sample, styles

OUT = Path("docs/images/before_after.png")
CACHE_DIR = "runs/readme"
SEED = 0
ZOOM = 3
LABEL_W, HEADER_H, GAP = 96, 22, 6


def label_font() -> ImageFont.ImageFont:
    """Pillow's own font at a readable size (Pillow >= 10.1 with FreeType), else its small bitmap
    font."""
    try:
        return ImageFont.load_default(size=13)
    except TypeError:
        return ImageFont.load_default()


def draw_grid(
    rows: list[list[Image.Image]], row_labels: list[str], col_labels: list[str]
) -> Image.Image:
    """A white canvas with a header line of column labels and a label left of each row."""
    size = rows[0][0].width * ZOOM
    cols = len(rows[0])
    canvas = Image.new(
        "RGB", (LABEL_W + cols * (size + GAP), HEADER_H + len(rows) * (size + GAP)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    font = label_font()
    for c, text in enumerate(col_labels):
        x = LABEL_W + c * (size + GAP)
        width = draw.textlength(text, font=font)
        draw.text((x + (size - width) / 2, 4), text, fill="black", font=font)
    for r, (pictures, text) in enumerate(zip(rows, row_labels, strict=True)):
        y = HEADER_H + r * (size + GAP)
        for line, part in enumerate(text.split("\n")):
            draw.text((6, y + size / 2 - 12 + 16 * line), part, fill="black", font=font)
        for c, picture in enumerate(pictures):
            big = picture.convert("RGB").resize((size, size), Image.Resampling.NEAREST)
            x = LABEL_W + c * (size + GAP)
            canvas.paste(big, (x, y))
            draw.rectangle(
                (x - 1, y - 1, x + size, y + size), outline="#c8c8c8"
            )  # white pictures on white
    return canvas


def main() -> None:
    pipe = models.load_pipeline("tiny", dtype="float32")
    lora_path = styles.train_or_load(pipe, r=8, steps=300, cache_dir=CACHE_DIR)
    prompts = styles.style_prompts()  # the held-out combinations, with the trigger phrase

    before = sample.generate(pipe, prompts, seeds=SEED)
    formats.apply_lora(pipe.unet, formats.load_lora(lora_path))
    try:
        after = sample.generate(pipe, prompts, seeds=SEED)
    finally:
        inject.remove_lora(pipe.unet)

    grid = draw_grid([before, after], ["base model", "with the\nstyle LoRA"], prompts)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    grid.save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB) from {lora_path}")


if __name__ == "__main__":
    main()
