"""mlx-host service plugin `vista`: medical and veterinary reasoning."""
