"""Model registry, sources and the manager that loads models on demand."""
