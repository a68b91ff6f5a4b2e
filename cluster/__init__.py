"""How the application meets a cluster: settings, storage, the Ray connection, the run layout."""
