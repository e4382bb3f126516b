"""Training and validation batches: random crops of whole documents, through grain.

Each source element is one document, a dict with `tokens` (int32 ids ending with EOS). The
pipeline reads it as [EOS] + tokens: the leading EOS marks the start of a piece, as GPT-2's
end-of-text token does, so the model learns how pieces begin and unconditional sampling can
start from [EOS] alone. One training example is one random window of that sequence, as in
Perceiver AR: its end is uniform over the positions that leave N valid latents (the crop is at
least N + 1 tokens long) and it reaches back at most M + 1 tokens, so the context before the
latents varies from 0 to M - N.

A batch is a dict of three int32 arrays [B, M]:

    inputs     the crop without its last token, left-padded with PAD_ID (0)
    targets    the crop without its first token (targets[:, t] follows inputs[:, t])
    positions  the index of each input in [EOS] + tokens (the leading EOS is 0); padding
               columns continue the count below 0

so the latents always sit on the last N columns, and the loss reads targets[:, -N:] where they
are not padding. For a document [a b c EOS] read as [EOS a b c EOS], with M = 4 and N = 2, a
crop ending at the document end gives inputs [EOS a b c], targets [a b c EOS] and positions
[0 1 2 3]; a crop of the first 3 tokens gives inputs [0 0 EOS a], targets [0 0 a b] and
positions [-2 -1 0 1]. Models with axis embeddings read the positions; others ignore them.

The pipeline is a grain `MapDataset` (shuffle per epoch -> repeat -> seeded random crop ->
batch), so batch i is a pure function of (seed, i): resuming at step s reads batch s onwards,
and the same seed gives the same data order on every machine. Row r of batch i is crop
i * B + r, so in a multi-process run each process builds only the rows its devices hold
(`rows`), and together they build exactly the batch one process would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grain
import numpy as np

from pact.errors import DatasetError

PAD_ID = 0
EOS_ID = 1


def with_start(tokens) -> np.ndarray:
    """The sequence the model sees for one document: [EOS] + tokens."""
    return np.concatenate([[EOS_ID], np.asarray(tokens, dtype=np.int32)]).astype(np.int32)


class RandomCrop(grain.transforms.RandomMap):
    """Cut one random training window from a document; see the module docstring."""

    def __init__(self, context: int, num_latents: int, crop: str = "random"):
        self.context = context
        self.num_latents = num_latents
        self.crop = crop

    def random_map(self, element: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        tokens = with_start(element["tokens"])
        if self.crop == "end":
            return crop_example(tokens, len(tokens), self.context)
        # End (exclusive) of the crop: the crop must hold N + 1 tokens unless the document is shorter.
        shortest_end = min(self.num_latents + 1, len(tokens))
        end = int(rng.integers(shortest_end, len(tokens) + 1))
        return crop_example(tokens, end, self.context)


def crop_example(tokens: np.ndarray, end: int, context: int) -> dict[str, np.ndarray]:
    """inputs, targets and positions [M] of the window of `tokens` that ends just before index `end`."""
    window = tokens[max(0, end - context - 1):end]
    inputs = np.full(context, PAD_ID, np.int32)
    targets = np.full(context, PAD_ID, np.int32)
    if len(window) >= 2:
        inputs[context - len(window) + 1:] = window[:-1]
        targets[context - len(window) + 1:] = window[1:]
    # The last input is tokens[end - 2], so column c contains index c + end - 1 - M.
    positions = np.arange(context, dtype=np.int32) + np.int32(end - 1 - context)
    return {"inputs": inputs, "targets": targets, "positions": positions}


class BatchRows(grain.MapDataset):
    """Rows `rows` of each batch of `batch_size` consecutive parent elements, stacked per key.

    Element i stacks parent elements i * batch_size + r for r in `rows`; with every row it is
    what `MapDataset.batch(batch_size, drop_remainder=True)` returns.
    """

    def __init__(self, parent: grain.MapDataset, batch_size: int, rows: Sequence[int]):
        super().__init__(parent)
        rows = [int(row) for row in rows]
        if not rows or min(rows) < 0 or max(rows) >= batch_size:
            raise ValueError(f"rows {rows} are not rows of a batch of {batch_size}")
        self._batch_size = batch_size
        self._rows = rows

    def __len__(self) -> int:
        return len(self._parent) // self._batch_size

    def __str__(self) -> str:
        return f"BatchRows(batch_size={self._batch_size}, rows={len(self._rows)})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        start = index * self._batch_size
        elements = [self._parent[start + row] for row in self._rows]
        return {name: np.stack([element[name] for element in elements]) for name in elements[0]}


def training_dataset(source, *, context: int, num_latents: int, batch_size: int,
                     seed: int, rows: Sequence[int] | None = None, crop: str = "random") -> grain.MapDataset:
    """Infinite `MapDataset` of batches: element i is the batch of training step i.

    `crop` "random" cuts windows as the module docstring says; "end" always takes the window
    that ends at the document's end, for tasks scored at the end such as the copy task.

    `rows` (default: all) selects the rows of each global batch to build, in that order.
    """
    if len(source) == 0:
        raise DatasetError("the training split is empty: encode at least one file into it")
    crops = (
        grain.MapDataset.source(source)
        .seed(seed)
        .shuffle()
        .repeat()
        .random_map(RandomCrop(context, num_latents, crop))
    )
    return BatchRows(crops, batch_size, range(batch_size) if rows is None else rows)


def batch_iterator(dataset: grain.MapDataset, start_step: int, worker_count: int = 0) -> Iterator[dict]:
    """Iterate batches `start_step`, `start_step + 1`, ... with background prefetching."""
    iterable = dataset.slice(slice(start_step, None)).to_iter_dataset(
        grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    )
    if worker_count > 0:
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(iterable)


def validation_batches(source, *, context: int, num_latents: int, batch_size: int,
                       num_batches: int, seed: int = 1234, rows: Sequence[int] | None = None,
                       crop: str = "random") -> list[dict[str, np.ndarray]]:
    """Build a fixed list of crop batches (`rows` of each), the same for every evaluation in a run."""
    if len(source) == 0:
        raise DatasetError("the validation split is empty")
    dataset = training_dataset(
        source, context=context, num_latents=num_latents, batch_size=batch_size, seed=seed, rows=rows,
        crop=crop,
    )
    return [dataset[index] for index in range(num_batches)]
