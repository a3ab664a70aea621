"""Files on disk: the workspace and safe paths, browsing and chunks, datasets, the model catalog, job logs."""
