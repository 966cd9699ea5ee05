"""mlx-host service plugin `fork`: code generation."""
