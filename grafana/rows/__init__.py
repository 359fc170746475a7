"""One module per dashboard row; each exposes `TITLE` and `panels(ctx) -> list of panel builders`."""
