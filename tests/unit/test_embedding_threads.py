"""One Embedder called from several threads at once (the default engine, OpenVINO,
refuses a second inference on its request object while one runs)."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pipeline.analysis.embedding import Embedder


def test_concurrent_calls_give_the_sequential_vectors() -> None:
    embedder = Embedder()
    texts = [[f"sshd: failed password for user{i}-{j} from 203.0.113.{j}" for j in range(8)]
             for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(embedder.embed_uncached, texts))
    alone = [embedder.embed_uncached(batch) for batch in texts]
    for got, expected in zip(together, alone, strict=True):
        assert got.shape == (8, 384)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
