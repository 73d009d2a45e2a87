"""The artifact repository core both services share: catalog, paths, HTTP API, wire contract."""
