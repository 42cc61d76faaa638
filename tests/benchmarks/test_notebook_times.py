"""benchmarks/notebook_times.py times both modes, and the switch reaches the kernel."""

import json

import nbformat

from benchmarks import notebook_times


def test_notebook_times_runs_both_modes_and_the_switch_reaches_the_kernel(tmp_path, capsys):
    path, seen = tmp_path / "00_probe.ipynb", tmp_path / "seen.txt"
    probe = (
        "from lorakit import config\n"
        f"open({str(seen)!r}, 'a').write(str(config.is_test_run()) + ' ')"
    )
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(probe)]), path)
    result = notebook_times.main(
        [str(path), "--repeats", "1", "--out", str(tmp_path / "times.json")]
    )
    assert seen.read_text().split() == ["True", "False"]  # test mode, then the student's
    assert set(result[path.name]) == {"test", "student"} and all(
        t[0] > 0 for t in result[path.name].values()
    )
    assert "00_probe.ipynb" in capsys.readouterr().out
    assert json.loads((tmp_path / "times.json").read_text())["runs"] == result
