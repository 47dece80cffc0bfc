"""Running the exported graphs: one runner per runtime, each with `run(feeds) -> outputs` by name."""
