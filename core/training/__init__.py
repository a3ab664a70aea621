"""ai-toolkit configs: simple parameters, the builder, the guarded YAML loader, YAML rewriting, base models."""
