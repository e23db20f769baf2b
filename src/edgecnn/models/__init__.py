"""Model zoo: a registry of torchvision architectures, the CustomNet family and LeNet-5."""
from edgecnn.models.profile import ModelProfile, count_params, profile_model
from edgecnn.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "profile_model", "count_params", "ModelProfile"]
