"""The GPU runner: ai-toolkit and the generation worker as subprocesses. Knows no HTTP and no database."""
