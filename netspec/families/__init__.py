"""Model families: each kind of model is one registered object (netspec/families/base.py).
Importing this package registers the built-in ones: the layer list (with its blocks) and the ViT."""
from netspec.families.base import FAMILIES, Family, family_of, register_family, unregister_family
from netspec.families import chain, vit  # noqa: F401  (registration)

__all__ = ["FAMILIES", "Family", "family_of", "register_family", "unregister_family"]
