"""lorakit.outline_loras: lesson 07's LoRAs are committed for the current settings, taken from
disk without training, and still reached as ``styles.train_or_load``."""

from lorakit import formats, outline_loras, styles


def test_lesson_07s_loras_are_committed_for_the_current_settings():
    """Lesson 07 loads these instead of training four LoRAs in class: they must be the preset's,
    at every rank."""
    ranks, steps = outline_loras.LAB_RANKS, outline_loras.LAB_STEPS
    want = {outline_loras.lora_folder_name(r, steps): r for r in ranks}
    committed = {p.parent.name for p in outline_loras.TRAINED_DIR.glob("*/lora.safetensors")}
    assert committed == set(want), (
        "data/loras/outline does not hold lesson 07's LoRAs for the current settings "
        f"(missing {set(want) - committed}, stale {committed - set(want)}): retrain them "
        "with `python -m lorakit.styles --loras` and delete the stale folders."
    )
    for name, r in want.items():
        weights = formats.load_lora(outline_loras.TRAINED_DIR / name / "lora.safetensors")
        assert (weights.format, weights.r, weights.alpha, len(weights.modules)) == (
            "kohya",
            r,
            float(r),
            96,
        )
        assert not any(
            p.name != "lora.safetensors" for p in (outline_loras.TRAINED_DIR / name).iterdir()
        ), "no checkpoints"


def test_train_or_load_takes_a_committed_lora_without_training(tmp_path):
    # no pipeline needed
    path = styles.train_or_load(object(), styles.LAB_RANKS[0], styles.LAB_STEPS, tmp_path)
    assert path.is_relative_to(styles.TRAINED_DIR) and not any(tmp_path.iterdir())


def test_styles_gives_lesson_07s_names_as_they_are():
    for name in styles.FROM_OUTLINE_LORAS:
        assert getattr(styles, name) is getattr(outline_loras, name), name
        assert name in styles.__all__
