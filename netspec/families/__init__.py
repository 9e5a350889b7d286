"""Model families: each kind of model is one module that registers itself in the spec's
registry (netspec/spec/family.py). Importing this package registers the built-in ones: the
layer list (with its blocks) and the ViT."""
from netspec.families import chain, vit  # noqa: F401  (registration)
