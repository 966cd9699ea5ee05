"""mlx-host service plugin `whisp`: audio transcription."""
