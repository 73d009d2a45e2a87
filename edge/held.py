"""Which blobs the edge holds, answered from its own records wherever they are enough.

A transaction's start says which blobs to send and its commit checks that all are there,
so both ask this of every blob of the bundle. Asking the blob store costs a request per
blob on S3 (a HEAD each: the largest cost of a push of small files), while the database
already knows most answers:

- a blob an index entry names is held (the ordering rule of ``repository.artifacts``);
- a blob a transaction stored is held while that transaction is OPEN or COMMITTED (it
  pins the blob against collection), provided the store's writes were durable when they
  returned (``StorageBackend.durable_on_write``): only then is the record made.

Where the store makes names durable only at ``sync()`` (local disk, once per commit), a
power cut could lose a blob the record names, so the store itself is asked about the
rest (a stat each, in one worker-thread trip). On a durable store a blob neither record
names counts as missing without asking: at worst its bytes are sent again.

A blob removed from the store behind the edge's back (by hand, by the bucket's own
lifecycle rules) is not found here: its download fails (a 404 from S3 to a redirected
client, a 503 when streaming) and the scrub reports it.
"""

from __future__ import annotations

from collections.abc import Mapping

from repository.catalog import Catalog
from storage_backends import StorageBackend

from .store import EdgeStore


class HeldBlobs:
    def __init__(self, catalog: Catalog, store: EdgeStore, storage: StorageBackend) -> None:
        self.catalog = catalog
        self.store = store
        self.storage = storage

    async def held(self, blobs: Mapping[str, int]) -> set[str]:
        """Those of ``blobs`` (sha256 -> size) the edge holds with that size."""
        indexed = await self.catalog.blob_sizes(list(blobs))
        held = {s for s, size in blobs.items() if indexed.get(s) == size}
        rest = [s for s in blobs if s not in held]
        if rest:  # on a durable store the records are complete; elsewhere the store is asked
            ask = self.store.stored if self.storage.durable_on_write else self.storage.sizes
            sizes = await ask(rest)
            held.update(s for s in rest if sizes.get(s) == blobs[s])
        return held

    async def stored(self, tx_id: str, sha256s: list[str]) -> None:
        """Record that a transaction's blobs are now in the store, where that record can be trusted."""
        if self.storage.durable_on_write and sha256s:
            await self.store.mark_stored(tx_id, sha256s)
