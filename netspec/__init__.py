"""netspec: describe, check and train small neural networks from one YAML file."""

__version__ = "0.1.0"
