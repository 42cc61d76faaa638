"""benchmarks/train_vs_diffusers.py, step_clock.py and the torchvision stand-in.

The stand-in's transforms against torchvision's semantics, computed here; the step clock on a
script that trains a few steps and imports PEFT and the stand-in as diffusers' script does; and the
benchmark's whole round on a stand-in for diffusers' script (two steps each): its table, timings
and held-out scores of every trainer's file. The timings are not checked.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import step_clock, train_vs_diffusers


def _stand_in():
    """The stand-in's transforms under another name: a module called torchvision in this process
    would make transformers think torchvision is installed."""
    path = Path(step_clock.__file__).parent / "stand_ins" / "torchvision" / "transforms.py"
    spec = importlib.util.spec_from_file_location("stand_in_transforms", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


transforms = _stand_in()

FAKE_SCRIPT = """
import argparse, torch
from peft import LoraConfig  # imported as diffusers' script does: transformers must still load
from torchvision import transforms
from lorakit import inject, models, formats

parser = argparse.ArgumentParser()
parser.add_argument("--output_dir")
parser.add_argument("--max_train_steps", type=int)
args, _ = parser.parse_known_args()
assert transforms.__name__ == "torchvision.transforms" and hasattr(transforms, "Normalize")
weight = torch.nn.Parameter(torch.zeros(3))
optimizer = torch.optim.SGD([weight], lr=0.1)
for _ in range(args.max_train_steps):
    weight.sum().backward()
    optimizer.step()
torch.manual_seed(0)
unet = models.load_pipeline("tiny", dtype="float32").unet
inject.inject_lora(unet, r=1, target_modules="attn2")
formats.save_lora(unet, args.output_dir + "/pytorch_lora_weights.safetensors", "diffusers")
"""


def picture(width, height):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_to_tensor_and_normalize_give_minus_one_to_one():
    image = picture(5, 3)
    tensor = transforms.ToTensor()(image)
    expected = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)
    assert tensor.shape == (3, 3, 5) and torch.equal(tensor, expected)
    normal = transforms.Normalize([0.5], [0.5])(tensor)
    assert torch.allclose(normal, tensor * 2 - 1)
    gray = transforms.ToTensor()(image.convert("L"))
    assert gray.shape == (1, 3, 5)


def test_resize_crops_and_flip_as_torchvision():
    image = picture(128, 96)
    resized = transforms.Resize(64, transforms.InterpolationMode.LANCZOS)(image)
    assert resized.size == (85, 64)  # the short side to 64, int(64 * 128 / 96) = 85
    assert transforms.Resize(64)(picture(96, 128)).size == (64, 85)
    cropped = transforms.CenterCrop(64)(resized)
    assert cropped.size == (64, 64)
    assert np.array_equal(np.asarray(cropped), np.asarray(resized)[:, 10:74])  # round(10.5) = 10
    same = picture(64, 64)
    assert np.array_equal(np.asarray(transforms.Resize(64)(same)), np.asarray(same))
    assert transforms.RandomCrop(64)(same) is same
    flipped = transforms.RandomHorizontalFlip(p=1.0)(same)
    assert np.array_equal(np.asarray(flipped), np.asarray(same)[:, ::-1])
    assert transforms.RandomHorizontalFlip(p=0.0)(same) is same
    composed = transforms.Compose([transforms.Lambda(lambda x: x), transforms.ToTensor()])
    assert composed(same).shape == (3, 64, 64)
    assert "lanczos" in [m.lower() for m in dir(transforms.InterpolationMode)]


def test_step_clock_stamps_every_optimizer_step_and_serves_the_stand_in(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(FAKE_SCRIPT)
    times = tmp_path / "times.json"
    (tmp_path / "out").mkdir()
    args = ["--output_dir", str(tmp_path / "out"), "--max_train_steps", "3"]
    done = subprocess.run(
        [sys.executable, step_clock.__file__, str(times), str(script), *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stamps = json.loads(times.read_text())["step_times"]
    assert len(stamps) == 3 and stamps == sorted(stamps)
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()


def test_an_installed_torchvision_that_does_not_load_is_refused_in_one_line(tmp_path):
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')"
    )
    script = tmp_path / "train.py"
    script.write_text("raise SystemExit('the script must not run')")
    done = subprocess.run(
        [sys.executable, step_clock.__file__, str(tmp_path / "t.json"), str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert done.returncode == 1
    assert "torchvision is installed but does not load" in done.stderr
    assert "pip uninstall torchvision" in done.stderr and "must not run" not in done.stderr


def test_a_round_times_and_scores_every_trainer(tmp_path, capsys):
    script = tmp_path / "train_text_to_image_lora.py"
    script.write_text(FAKE_SCRIPT)
    figures = train_vs_diffusers.main(
        ["--diffusers", str(script), "--repeats", "1", "--steps", "2", "--seeds", "1"]
    )
    out = capsys.readouterr().out
    assert set(figures) == {"lorakit", "lorakit, 300 steps at lr 1e-3", "diffusers"}
    for row in figures.values():
        assert row["wall"][0] > 0 and row["step"][0] > 0
        assert all(0 <= row[k] <= 1 for k in ("style", "colour", "shape"))
    assert "base model, no LoRA" in out and "x diff." in out


def test_a_folder_without_the_script_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no examples/text_to_image"):
        train_vs_diffusers.script_path(str(tmp_path))
