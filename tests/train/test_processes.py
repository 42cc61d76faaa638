"""lorakit.train.processes: every micro-batch split over the processes exactly, and one process's
all-reduce a no-op."""

import pytest
import torch

from lorakit import train


def test_processes_split_every_micro_batch_exactly():
    for batch_size, processes in ((8, 1), (8, 2), (3, 2), (3, 3), (7, 4)):
        parts = [train.process_rows(batch_size, processes, i) for i in range(processes)]
        assert [row for part in parts for row in range(batch_size)[part]] == list(range(batch_size))
        assert all(part.stop > part.start for part in parts), parts  # nobody idles
    assert train.process_rows(8, 1, 0) == slice(0, 8)  # one process: the whole batch, as always
    with pytest.raises(
        ValueError, match=r"batch_size 1 is smaller than the number of processes \(2\)"
    ):
        train.process_rows(1, 2, 1)


def test_one_process_all_reduce_is_a_no_op(quick):
    accelerator = train.make_accelerator(quick(), torch.device("cpu"))
    params = [torch.nn.Parameter(torch.ones(3))]
    params[0].grad = torch.full((3,), 2.0)
    assert (
        accelerator.num_processes == 1 and train.all_reduce_grads(accelerator, params, 0.25) == 0.25
    )
    assert torch.equal(params[0].grad, torch.full((3,), 2.0))
