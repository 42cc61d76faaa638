"""The shape's region: the largest connected component against a flood fill, and the ink mask
against the drawn picture."""

from collections import deque

import numpy as np

from lorakit import metrics, shapes


def _flood_fill_components(mask):
    """Reference: 8-connected components by breadth-first search, largest first."""
    seen, components = np.zeros_like(mask), []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start], queue, members = True, deque([start]), []
        while queue:
            y, x = queue.popleft()
            members.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if (
                        0 <= ny < mask.shape[0]
                        and 0 <= nx < mask.shape[1]
                        and mask[ny, nx]
                        and not seen[ny, nx]
                    ):
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        components.append(members)
    return sorted(components, key=len, reverse=True)


def test_largest_component_matches_flood_fill():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        mask = rng.random((rng.integers(5, 30), rng.integers(5, 30))) < rng.uniform(0.2, 0.6)
        components = _flood_fill_components(mask)
        if len(components) > 1 and len(components[0]) == len(components[1]):
            continue  # a tie: either answer is right
        expected = np.zeros_like(mask)
        for y, x in components[0] if components else []:
            expected[y, x] = True
        assert np.array_equal(metrics.largest_component(mask), expected)
        checked += 1
    assert checked > 100


def test_ink_mask_is_the_drawn_shape():
    spec = shapes.sample_spec(3, 0)
    image = shapes.render(spec)
    mask = metrics.ink_mask(image)
    want = np.abs(np.asarray(image, dtype=np.int16) - 255).max(-1) > metrics.INK_THRESHOLD
    assert mask.shape == (64, 64) and np.array_equal(mask, want) and 0 < mask.sum() < mask.size
