"""The runtime of factsync: configuration, listener, event store and queue, workers, command line."""
