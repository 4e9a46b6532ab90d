"""Read-side query helpers: the ``where`` filter grammar and ``orderBy`` compilation."""
