"""Reading the chain: the JSON-RPC client (:mod:`.rpc`), swap extraction (:mod:`.swaps`), program
ids (:mod:`.programs`) and the :class:`~kolray.chain.types.Swap` record (:mod:`.types`)."""
