"""benchmarks/file_kinds.py: every kind does what its row says, and applied kinds match their
reference (diffusers' loaders, or the LoHa/LoKr formula) to float64's rounding."""

from benchmarks import file_kinds


def test_each_kind_of_file_does_what_the_table_says():
    rows = file_kinds.main()
    architectures = {kind: cells[0] for kind, cells in rows.items()}
    assert architectures["SDXL, kohya (LDM names)"] == "SDXL" == architectures["SDXL, diffusers"]
    assert architectures["Flux, kohya (fused qkv)"] == "Flux" == architectures["Flux, diffusers"]
    for kind, cells in rows.items():
        if kind == "DoRA":
            assert all(c.startswith("refused: holds a DoRA adapter") for c in cells)
            continue
        merge, kohya = float(cells[2]), float(cells[3])
        assert merge < 1e-6 and kohya < 1e-6, kind  # concat and the kohya spelling are exact
        if kind.startswith("Flux, kohya"):
            assert cells[4].startswith("refused: kohya's fused q, k and v")
            assert cells[5].startswith("refused")
            continue
        assert float(cells[4]) < 1e-6, kind
        error, change = (float(x) for x in cells[5].split(" of "))
        assert change > 0 and error < 1e-5, kind  # relative to what the LoRA changes
