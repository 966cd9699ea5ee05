"""mlx-host service plugin `anydatanext`: data processing."""
