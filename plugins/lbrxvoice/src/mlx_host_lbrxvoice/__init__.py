"""mlx-host service plugin `lbrxvoice`: voice assistant replies."""
