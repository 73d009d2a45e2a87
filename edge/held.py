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

Neither record speaks for a blob the scrub quarantined: it left the store, so it is missing
until its right bytes are stored again. A committed bundle being repaired asks the store
itself (``stored=True``): its own index entries name every blob it lists, so only the store
can say which it lost. Outside a repair, a blob removed from the store behind the edge's
back (by hand, by the bucket's own lifecycle rules) is not found here: its download fails
(a 404 from S3 to a redirected client, a 503 when streaming) and the scrub reports it.
"""

from __future__ import annotations

from collections.abc import Mapping

from repository.artifacts import ArtifactService

from .store import EdgeStore


class HeldBlobs:
    def __init__(self, artifacts: ArtifactService, store: EdgeStore) -> None:
        self.artifacts = artifacts
        self.store = store

    async def held(self, blobs: Mapping[str, int], *, stored: bool = False) -> set[str]:
        """Those of ``blobs`` (sha256 -> size) the edge holds with that size; with ``stored``,
        only on the blob store's word."""
        storage = self.artifacts.storage
        if stored:
            rest, held = list(blobs), set[str]()
        else:
            quarantined = await self.artifacts.quarantined.among(blobs)
            indexed = await self.artifacts.catalog.blob_sizes([s for s in blobs if s not in quarantined])
            held = {s for s, size in blobs.items() if indexed.get(s) == size}
            rest = [s for s in blobs if s not in held and s not in quarantined]
            if storage.durable_on_write:  # the records are complete: what they do not name is missing
                recorded = await self.store.stored(rest)
                return held | {s for s in rest if recorded.get(s) == blobs[s]}
            rest += sorted(quarantined)  # the right bytes may be back already: the store knows
        sizes = await storage.sizes(rest)
        return held | {s for s in rest if sizes.get(s) == blobs[s]}

    async def stored(self, tx_id: str, sha256s: list[str]) -> None:
        """Record that a transaction's blobs are now in the store, where that record can be trusted."""
        if self.artifacts.storage.durable_on_write and sha256s:
            await self.store.mark_stored(tx_id, sha256s)
