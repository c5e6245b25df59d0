"""The package's layers run one way: a module imports only modules of lower layers.

tokenizer -> layers -> encoders -> model -> loss -> data -> zero-shot/retrieval
-> training (settings and run folder -> processes and data -> the loop) ->
command line. Every import counts, also the ones inside functions (a lazy
import still ties two modules together). A new module must be placed in
LAYERS, which is the map a reader can follow.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "clip_from_scratch"

# Lowest first. Modules in one layer may not import each other.
LAYERS = [
    ["errors", "files", "data.pairs", "data.root"],           # no package imports at all
    ["course"],                                               # the notebooks' helpers: fast mode, the device
    ["download", "torchscript_archive", "transforms", "data.coco_fetch"],   # files and pixels
    ["clip_vocab"],                                           # where CLIP's vocabulary file comes from
    ["tokenizer"],
    ["bpe"],                                                  # training a tokenizer sits above using one
    ["layers"],
    ["text_encoder", "vision_encoder", "resnet_encoder"],
    ["model"],
    ["convert"],                                              # other layouts and safetensors, in and out
    ["openai_weights", "loss"],
    ["objectives"],                                           # chapter 08's other objectives: use the loss
    ["data.relations"],                                       # two-object captions and their perturbations
    ["data.shapes", "data.cifar", "data.coco"],
    ["zeroshot", "retrieval", "plotting", "probe", "probes"],
    ["train_config", "runs"],                                 # a run's settings; a run's folder and state
    ["training_run", "train_data", "export"],                 # processes and signals; what a run trains on; export
    ["train"],
    ["exercises.*"],                                          # checks for the notebooks: use anything below
    ["cli"],
    ["__main__", "__init__"],
]
EXEMPT = {"data.__init__", "exercises.__init__"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def package_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, relative imports resolved, function-level ones included."""
    here = module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - (node.level - 1)]
            if node.module:
                found.add(".".join(base + [node.module]))
            else:
                found.update(".".join(base + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clip_from_scratch."):
            found.add(node.module[len("clip_from_scratch."):])
        elif isinstance(node, ast.Import):
            found.update(alias.name[len("clip_from_scratch."):] for alias in node.names
                         if alias.name.startswith("clip_from_scratch."))
    return {name for name in found if name and name != "data"}


def layer_of(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if name in layer or (name.split(".")[0] + ".*") in layer:
            return index
    raise AssertionError(f"clip_from_scratch/{name.replace('.', '/')}.py is in no layer: add it to LAYERS "
                         f"in {Path(__file__).name}, below everything that imports it")


def test_every_module_imports_only_lower_layers():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name in EXEMPT:
            continue
        for imported in sorted(package_imports(path)):
            same_family = name.startswith("exercises.") and imported.startswith("exercises.")
            if not same_family and layer_of(imported) >= layer_of(name):
                problems.append(f"{name} (layer {layer_of(name)}) imports {imported} (layer {layer_of(imported)})")
    assert not problems, "imports that run upwards or sideways:\n  " + "\n  ".join(problems)


def test_the_layer_map_names_only_modules_that_exist():
    existing = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for layer in LAYERS:
        for name in layer:
            if name.endswith(".*"):
                assert any(m.startswith(name[:-1]) for m in existing), name
            else:
                assert name in existing, f"LAYERS names {name}, which does not exist"
