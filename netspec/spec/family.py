"""The model-family seam: what every kind of model brings, and the registries that hold them.

A family is one registered object (in the style of torchvision's `register_model`): the
YAML key it answers to under `model:`, its frozen config, its schema fragment, its analysis
(shapes and parameter counts without torch), its builder (torch imported when called), and
the few facts the rest of netspec asks about a model. Nothing outside a family's own module
asks which family it holds. A block (Residual, Concat, Repeat) is a table entry of the same kind.

The seam lives in the spec because a spec's `model:` section is read, written and checked
through it; the families themselves (netspec/families) import the spec and register here, so
the spec never imports them.

Shapes here never include the batch dimension.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the families' analyses take the whole spec (data classes, batch sizes)
    from netspec.spec.config import Spec

Shape = tuple[int, ...]
DEFAULT_CLASSES = 10  # a shapes-only spec (dataset none) that does not state data.classes
MAX_ACTIVATION_BYTES = 8 << 30  # one training (or evaluation) batch's activations, float32
BYTES = 4


def plain(value):
    """Tuples as lists, all the way down: what YAML and JSON write."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def num_classes(spec: "Spec") -> int:
    """The model's output size: the dataset's classes (the check writes them into the spec)."""
    return spec.data.classes or DEFAULT_CLASSES


@dataclass(frozen=True)
class BuildProblem:
    path: tuple  # where in the spec, e.g. ("model", "layers", 3)
    message: str  # may name other places as {0}, {1}: the check writes them as "line N"
    hint: str = ""
    refs: tuple = ()  # the paths {0}, {1}, ... stand for
    code: str = "shape"  # the finding's stable code: shape, limit, output-size


@dataclass(frozen=True)
class Row:
    """One line of the summary table (a layer, or a block with its subtotal)."""

    index: int  # position in its own list (a block's children count from 0 again)
    name: str  # the module's name in its parent, e.g. conv2d_0 (state_dict keys are built from it)
    layer: str  # what it is, with its non-default arguments
    shape: Shape  # output shape of one sample
    params: int  # trainable (a block: its subtotal)
    frozen: int = 0  # non-trainable parameters
    depth: int = 0  # nesting: 0 at the top, 1 inside a block, ...
    block: bool = False  # a subtotal row: its parameters are its children's, not counted again
    path: tuple = ()  # where in the spec: ("model", "layers", 3, "Residual", "layers", 1)
    main: bool = True  # on the model's main path (not a second Concat branch or a shortcut)
    kind: str = ""  # the layer or block name (Conv2d, Residual), for lints and comparisons


@dataclass(frozen=True, order=True)
class LintWarning:
    path: tuple  # where in the spec, e.g. ("model", "layers", 4)
    name: str  # a key of netspec.spec.schema.LINT_WARNINGS
    message: str


@dataclass
class Analysis:
    input_shape: Shape
    rows: list[Row] = field(default_factory=list)
    problems: list[BuildProblem] = field(default_factory=list)
    output_shape: Shape | None = None
    hidden_units: int | None = None  # layer lists only: out_features of every Linear but the last
    activation_elements: int = 0  # per sample, summed over layer outputs
    modules: int = 0  # torch modules the builder will create
    softmax_head: bool = False  # the model ends in Softmax (folded into the loss)
    output_path: tuple = ("model",)  # where a wrong output size is reported
    output_hint: str = ""  # how to fix it, {classes} standing for the data set's classes
    unknown: frozenset = frozenset()  # items the schema refused (their paths): the shape is unknown after them
    output_features: int | None = None  # the last Linear's out_features, when the shape before it is unknown
    assumed: tuple = ()  # (path, shape): a block that failed, whose layers' output shape is carried on
    lost: tuple | None = None  # where the first finding that leaves later shapes unknown (or assumed) is reported

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows if not r.block)

    @property
    def frozen(self) -> int:
        return sum(r.frozen for r in self.rows if not r.block)



class Family:
    """One kind of model. Subclasses set `key` and `config` and fill in the methods; the
    defaults are the answers for a model with no layers to name, lint or convolve."""

    key: str = ""  # model.<key> in a spec
    config: type = object  # the frozen dataclass `parse` returns
    doc: str = ""  # one line for the schema and the README

    # --- spec side (no torch) ---------------------------------------------------------------
    def schema(self, allowed: list[str] | None) -> tuple[dict, dict]:
        """The JSON Schema of model.<key>, and $defs it refers to (allowed: the rules' whitelist)."""
        raise NotImplementedError

    def parse(self, raw: Any) -> Any:
        """The frozen config from schema-valid data."""
        raise NotImplementedError

    def to_dict(self, config: Any) -> Any:
        """The config as a spec writes it (every default filled in), loadable again by parse."""
        raise NotImplementedError

    def analyze(self, spec: "Spec", analysis: Analysis) -> None:
        """Rows, output shape and activation size, or problems, without torch."""
        raise NotImplementedError

    # --- facts the rest of netspec asks for ------------------------------------------------
    def layer_names(self, config: Any) -> list[str]:
        """Layer names for the rules' whitelist and required layers."""
        return [self.key]

    def block_names(self, config: Any) -> list[str]:
        """Blocks used (for a rule set's allowed_blocks)."""
        return []

    def named_places(self, config: Any) -> list[tuple[tuple, str]]:
        """(spec path, name) of each layer and block, where a rule refusing that name reports it."""
        return [(("model", self.key), name) for name in self.layer_names(config) + self.block_names(config)]

    def describe(self, config: Any) -> list[tuple[str, str]]:
        """(kind, text) per part, for comparing two runs' architectures."""
        return [(self.key, self.key)]

    def lint(self, spec: "Spec", analysis: Analysis) -> list[LintWarning]:
        return []

    def hint_within(self, hint: str, allowed: list[str], spec: "Spec") -> str:
        """The hint reworded where it suggests a layer the rules' whitelist `allowed` refuses."""
        return hint

    def training_problems(self, spec: "Spec") -> list[tuple[tuple, str, str]]:
        """Settings the schema accepts that this model cannot train with: (path, message, hint)."""
        return []

    def has_conv(self, config: Any) -> bool:
        """Convolutions: channels-last layout pays."""
        return False

    def heavy(self, config: Any) -> bool:
        """Enough arithmetic per sample for mixed precision and compiling to pay."""
        return self.has_conv(config)

    attention: bool = False  # the module has attention: fused kernels apply, and it records maps (heatmaps)

    def attention_depth(self, model) -> int:
        """Layers with attention maps (attention families only)."""
        raise NotImplementedError

    def attention_maps(self, model, x, layer: int):
        """Post-softmax attention of one layer for the batch x: ((B, heads, T, T), patch grid (rows, cols))."""
        raise NotImplementedError

    # --- builder side (torch imported when called) ------------------------------------------
    def build(self, spec: "Spec"):
        """The torch module, weights initialised by torch's defaults under the current seed."""
        raise NotImplementedError


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Register a family under its key; refuses a key or config class already taken."""
    if not family.key or family.key in FAMILIES:
        raise ValueError(f"model family {family.key!r} is already registered (or has no key)")
    if any(f.config is family.config for f in FAMILIES.values()):
        raise ValueError(f"config class {family.config.__name__} already belongs to a family")
    FAMILIES[family.key] = family
    return family


def unregister_family(key: str) -> None:
    FAMILIES.pop(key, None)


def family_of(config: Any) -> Family:
    """The family a frozen model config belongs to."""
    for family in FAMILIES.values():
        if type(config) is family.config:
            return family
    raise LookupError(f"no model family holds {type(config).__name__}")


@dataclass(frozen=True)
class BlockType:
    name: str
    bodies: str  # "layers" (one body) or "branches" (several)
    analyze: Callable  # (block, shape, path, walker, depth, main) -> output shape, or None after a problem
    make: Callable  # (block, shape, build_list) -> (torch module, output shape)
    args: dict[str, dict] = field(default_factory=dict)  # argument -> JSON Schema (besides the bodies)
    required: tuple[str, ...] = ()
    doc: str = ""


BLOCKS: dict[str, BlockType] = {}
BLOCK_NAMES: list[str] = []  # sorted; a schema names this very list, so it holds the blocks registered later too


def register_block(entry: BlockType) -> BlockType:
    """Register a block under its name; refuses a name already taken."""
    if entry.name in BLOCKS:
        raise ValueError(f"block {entry.name!r} is already registered")
    BLOCKS[entry.name] = entry
    BLOCK_NAMES[:] = sorted(BLOCKS)
    return entry
