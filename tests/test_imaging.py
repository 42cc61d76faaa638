"""Pictures as tensors: ``imaging.to_tensor`` and ``imaging.to_image`` undo each other exactly."""

from lorakit import imaging, shapes


def test_tensor_image_round_trip_is_exact():
    image = shapes.render(shapes.sample_spec(1))
    assert imaging.to_image(imaging.to_tensor(image)).tobytes() == image.tobytes()
