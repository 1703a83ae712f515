"""Model registry (torch-free) and the torch model definitions (imported on demand)."""

from .registry import canonical_name, create_model, default_spec, get_entry, model_names

__all__ = ["canonical_name", "create_model", "default_spec", "get_entry", "model_names"]
