"""The seed's contract: the dispatcher of its types, input models, validation, views, chunked downloads."""
