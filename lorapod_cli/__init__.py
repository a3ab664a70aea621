"""The `lorapod` command line: a client of a pod or a RunPod endpoint, plus `serve` and `migrate`."""
