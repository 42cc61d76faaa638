"""What the tests of lorakit.inject and lorakit.targets share: a UNet of their own to change."""

import copy

import pytest


@pytest.fixture
def unet(shared_pipe):
    """This test's own copy of the tiny SD's UNet (SD 1.5's module paths)."""
    return copy.deepcopy(shared_pipe.unet)
