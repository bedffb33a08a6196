"""The model registry: where weights live, how they are fetched, found and prepared."""
