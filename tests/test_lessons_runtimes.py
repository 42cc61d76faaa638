"""Every lesson on a GPU runtime (Colab's, say), played on the CPU; and lesson 05 with every cell
run twice.

``make test`` executes the lessons as a laptop runs them (no GPU: small mode). On a machine with
CUDA, ``config.get_mode()`` says ``full``. The lessons written around the tiny SD (01-07) must then
still run the tiny SD with its own settings (64x64, float32, the tiny SD's sampler), and only lesson
08 moves to SD 1.5. Here the kernel is told a GPU is there (``config.gpu_present``, the seam the
mode reads) while the work stays on the CPU, and every ``StableDiffusionPipeline`` call is recorded.
Lesson 08's "SD 1.5" is an SD-shaped pipeline with fresh weights in a local folder
(``LORAKIT_SD15``), since nothing downloads here: it runs SD 1.5's code path and settings at that
model's own 64 px.

In the same kernel, once the lesson has run, every mistake of tests/exercise_mistakes/ takes the
place of its exercise's solution, and the exercise's check must stop it (tests/lesson_exercises.py).
"""

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lorakit import config, models

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location(
    "lesson_exercises", ROOT / "tests" / "lesson_exercises.py"
)
lesson_exercises = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lesson_exercises)
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TINY = config.PRESETS["small"]
FULL = config.PRESETS["full"]

PLAY_A_GPU = """\
from lorakit import config, models
from diffusers import StableDiffusionPipeline
config.gpu_present = lambda: True  # the mode sees a GPU; the work stays on the CPU
import inspect
_pipe_calls, _real_call = [], StableDiffusionPipeline.__call__
def _recorded(self, *args, **kwargs):
    asked = inspect.signature(_real_call).bind(self, *args, **kwargs)
    asked.apply_defaults()  # what the pipeline will use, given or not
    # diffusers' own default for height and width
    side = self.unet.config.sample_size * self.vae_scale_factor
    _pipe_calls.append({"height": asked.arguments["height"] or side,
                        "width": asked.arguments["width"] or side,
                        "guidance_scale": asked.arguments["guidance_scale"],
                        "num_inference_steps": asked.arguments["num_inference_steps"],
                        "dtype": str(self.unet.dtype), "tiny": config.is_tiny_sd(self)})
    return _real_call(self, *args, **kwargs)
StableDiffusionPipeline.__call__ = _recorded
"""
REPORT = 'import json; print(json.dumps({"mode": config.get_mode(), "calls": _pipe_calls}))'


@pytest.fixture(scope="module")
def sd15_stand_in(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd15-stand-in")
    models.make_pipeline(models.build_tiny_sd(seed=1)).save_pretrained(folder)
    return folder


def run_on_a_gpu_runtime(
    path: Path, monkeypatch, sd15_dir: Path, rerun_every_cell: bool = False
) -> dict:
    """Execute lesson ``path`` as on a GPU runtime, then try its exercises' mistakes; returns the
    mode the kernel saw, its pipeline calls and how each mistake ended."""
    monkeypatch.delenv(
        "LORAKIT_MODE", raising=False
    )  # the mode comes from the (played) GPU, as in Colab
    monkeypatch.setenv("LORAKIT_SD15", str(sd15_dir))
    monkeypatch.setenv("LORAKIT_TEST", "1")
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(1, nbformat.v4.new_code_cell(PLAY_A_GPU))
    report = nbformat.v4.new_code_cell(REPORT)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(
                cell, index
            )  # raises CellExecutionError on an error, a failed check included
        if rerun_every_cell:  # a student runs a cell again after later ones, constantly
            for index, cell in enumerate(notebook.cells[2:], start=2):
                if cell.cell_type == "code":
                    client.execute_cell(cell, index)
        notebook.cells.append(report)
        client.execute_cell(report, len(notebook.cells) - 1)
        mistakes = lesson_exercises.try_mistakes(client, notebook, path.name[:2])
    red = [
        f"cell {i}: {o['text'][:160]}"
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.get("name") == "stderr"
    ]
    assert not red, "red output, which a student takes for an error:\n" + "\n".join(red)
    # the whole of the report's stdout: a long line may come back in several stream messages
    seen = json.loads("".join(o["text"] for o in report.outputs if o.get("name") == "stdout"))
    return {**seen, "mistakes": mistakes}


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_every_lesson_on_a_gpu_runtime(path, monkeypatch, sd15_stand_in):
    seen = run_on_a_gpu_runtime(
        path, monkeypatch, sd15_stand_in, rerun_every_cell=path.name.startswith("05")
    )
    assert seen["mode"] == "full"
    let_through = [m for m, ended in seen["mistakes"].items() if ended == lesson_exercises.PASSED]
    assert not let_through, f"mistakes the checks let through: {let_through}"
    raised = {m: e for m, e in seen["mistakes"].items() if e.startswith("solution raised")}
    assert not raised, f"mistakes that never reached their check: {raised}"
    broken = [m for m, ended in seen["mistakes"].items() if ended == "NameError"]
    assert not broken, f"mistakes that name what does not exist, a slip in the mistake: {broken}"
    by_error = [m for m, ended in seen["mistakes"].items() if ended != "CheckFailed"]
    documented = lesson_exercises.documented()[path.name[:2]][3]
    assert len(by_error) == documented, f"docs/teaching.md says {documented}: {by_error}"
    calls = seen["calls"]
    if path.name.startswith("08"):  # the one lesson that moves to SD 1.5 in full mode
        assert calls, "lesson 08 draws pictures"
        assert {(c["tiny"], c["guidance_scale"], c["num_inference_steps"]) for c in calls} == {
            (False, FULL.guidance_scale, FULL.num_inference_steps)
        }, calls
        assert {(c["height"], c["width"]) for c in calls} == {(64, 64)}, (
            "the model's own resolution"
        )
        return
    for call in calls:  # the tiny SD, with its own settings, whatever the mode says
        assert call["tiny"] and call["dtype"] == "torch.float32", call
        assert (call["height"], call["width"]) == (TINY.resolution, TINY.resolution), call
        assert call["guidance_scale"] == TINY.guidance_scale, call
        assert call["num_inference_steps"] < FULL.num_inference_steps, call
    if path.name[:2] in ("03", "04", "05", "06", "07"):
        assert calls, f"{path.name} draws pictures with the tiny SD"
