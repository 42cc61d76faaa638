"""Each run of the first published claims (docs/claims/claim<N>.json), given its effective settings:
``python -m benchmarks.published_settings``.

Those runs record the arguments they were given (method, variant, rank, learning rate, steps,
seed) but not the settings they trained with. The settings follow from those arguments and the
small preset, which has not changed since the runs (the same rank, targets, dropouts and
AdamW weight decay of 1e-2): :func:`settings_for` builds them as the experiment itself does
(``claims.config`` and ``claims.settings_of``, as ``claims.fit`` calls them), and the test checks
it against what the experiments record today. Each run so completed says so
(``"settings_derived": true``); a run that records its settings is left as it is. The text
classifier of claim 5 and textual inversion of claim 6 train in their own loops, whose fixed
settings are written out here.
"""

from __future__ import annotations

import json

from lorakit import claims, files

TEXT_SIDE = {"lora_dropout": 0.0, "caption_dropout": 0.0, "weight_decay": 0.0}  # their loop


def fitted(where: str, **overrides) -> dict:
    """The settings ``claims.fit(pipe, data, where, **overrides)`` trains with."""
    if where == "full":
        return claims.settings_of(claims.config(method="full", **overrides), "full")
    return claims.settings_of(claims.config(target_modules=where, **overrides), where)


def _text_side(run: dict, **settings) -> dict:
    return settings | TEXT_SIDE | {"steps": run["steps"], "seed": run["seed"]}


def settings_for(claim: str, run: dict) -> dict | None:
    """A claim's run's settings, from the arguments it records (None: not a training run)."""
    seed = run.get("seed")
    if claim in ("1", "5") and "variant" in run:
        return fitted(claims.WHERE[run["variant"]], seed=seed, steps=run["steps"])
    if claim == "5" and run.get("where") == "text encoder":
        text = list(claims.TEXT_TARGETS)
        return _text_side(run, method="lora", r=8, alpha=8, scaling=1.0, lr=1e-3, targets=text)
    if claim == "5":  # classifier_study's defaults: rank 2, lr 1e-2, 150 steps
        return {"method": "lora, full and head only", "r": run["r"], "alpha": run["r"]} | {
            "scaling": 1.0, "lr": 1e-2, "steps": 150, "targets": "the classifier's linear layers",
            "seed": seed, "weight_decay": 0.0,
        }  # fmt: skip
    if claim == "2-3":
        steps = run["curve"][-1]["steps"]
        return fitted("full" if run["method"] == "full" else "attn2+ff", seed=seed, steps=steps)
    if claim == "4":
        rank = {} if run["method"] == "full" else {"r": run["r"]}
        where = "full" if run["method"] == "full" else "attn2+ff"
        return fitted(where, seed=seed, steps=run["steps"], lr=run["lr"], **rank)
    if claim == "6" and "method" in run:  # inversion_and_lora: the preset's LoRA, text_side's loop
        lora = run["method"] != "inversion"
        return _text_side(
            run,
            method=run["method"],
            r=8 if lora else None,
            lr={
                "lora": 1e-3 if lora else None,
                "embedding": 5e-3 if run["method"] != "lora" else None,
            },
            targets="attn2+ff" if lora else "the word's row of the token embeddings",
        )
    if claim == "6":  # two_loras: each LoRA the small preset
        return fitted("attn2+ff", seed=seed, steps=run["steps"])
    if claim == "7":
        return fitted("attn2+ff", seed=seed, steps=run["steps"], r=run["r"])
    if claim == "8":
        where = claims.WHERE[run["variant"]]
        rank = {} if where == "full" else {"r": run["r"]}
        return fitted(where, seed=seed, steps=run["steps"], **rank)
    if claim == "9":
        return claims.settings_of(
            claims.config(
                r=run["r"], alpha=run["alpha"], lr=run["lr"], seed=seed, steps=run["steps"]
            )
        )
    return None


def complete(claim: str, report: dict) -> int:
    """Give every run of ``report`` (and claim 4's sweep) that lacks them its settings; how many."""
    done = 0
    for run in report["runs"] + report.get("sweep", []):
        if "settings" not in run and (found := settings_for(claim, run)) is not None:
            run["settings"], run["settings_derived"] = found, True
            done += 1
    return done


def main() -> None:
    for claim in ("1", "2-3", "4", "5", "6", "7", "8", "9"):
        path = claims.published_path(claim)
        report = json.loads(path.read_text())
        count = complete(claim, report)
        files.write_atomically(path, json.dumps(report, indent=1))
        print(f"{path.name}: {count} runs given their settings")


if __name__ == "__main__":
    main()
