"""The sync side of factsync: the HostFact/WeFact API client, ledger adapters and the sync tasks.

Nothing here imports `worker`: the runtime calls the sync logic, never the other way round.
"""
