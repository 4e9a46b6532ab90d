"""The read side: queries over the projections on reader connections."""
