"""What the tests of lorakit.claims share: one copy of the tiny SD that every experiment is given
(each must give it back as it found it), and the check that it did."""

import copy

import pytest
import torch

from lorakit import inject

PARTS = ("unet", "text_encoder")


class Unchanged:
    """The weights of a pipeline's UNet and text encoder as a test starts (``weights``), and the
    check that the pipeline is back as it was (:meth:`check`)."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.weights = {
            name: {k: v.clone() for k, v in getattr(pipe, name).state_dict().items()}
            for name in PARTS
        }

    def check(self) -> None:
        """The same modules and weights as at the start, and no LoRA layer left."""
        for name in PARTS:
            now, before = getattr(self.pipe, name).state_dict(), self.weights[name]
            assert set(now) == set(before), f"{name} has other modules than before"
            changed = [k for k in now if not torch.equal(now[k], before[k])]
            assert not changed, f"{name}: {changed[:3]} changed"
        assert (
            next(inject.lora_layers(self.pipe.unet), None) is None
            and next(inject.lora_layers(self.pipe.text_encoder), None) is None
        )


@pytest.fixture(scope="session")
def claims_pipe(shared_pipe):
    """The tiny SD that the claims' experiments train and give back: a copy of ``shared_pipe``."""
    return copy.deepcopy(shared_pipe)


@pytest.fixture
def unchanged(claims_pipe):
    """``claims_pipe`` as this test starts: ``unchanged.check()`` asserts it is back so."""
    return Unchanged(claims_pipe)
