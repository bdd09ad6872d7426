"""Models users have: any torchvision classification model by name (`arch=torchvision
arch.model=resnet18`) and, when timm is installed, any timm model (`arch=timm
arch.model=convnext_atto`). They keep their own code; varexp finds their weight layers (every
Linear, Conv1d/2d/3d and ConvTranspose1d/2d/3d, varexp.models.base.weight_layers) and measures
each one's output. `arch.norm=none` swaps their BatchNorm, LayerNorm and GroupNorm for Identity;
`arch.bias=true` gives their bias-less weight layers zero biases (for init=scale+bias).
"""

from __future__ import annotations

import difflib
import importlib.util

from torch import nn

from varexp.errors import ConfigError, bad_value
from varexp.options.arch import TimmArch, TorchvisionArch

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def build(arch: TorchvisionArch | TimmArch, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The named model for inputs of `shape` (channels, height, width) with num_classes
    outputs; one line naming close matches for an unknown name."""
    if arch.name == "torchvision":
        # deferred, as everywhere in varexp: torchvision's import costs about 2 s
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        _check_name(arch.model, names, "torchvision classification model")
        options: dict[str, object] = {"num_classes": num_classes}
        if arch.model.startswith("vit_"):
            options["image_size"] = shape[-1]  # ViTs are built for one input size
        model = torchvision.models.get_model(arch.model, **options)
    else:
        if importlib.util.find_spec("timm") is None:
            raise ConfigError(
                "arch=timm needs the timm package, which is not installed: "
                "pip install -e '.[timm]' (or pip install timm)"
            )
        import timm  # deferred: an optional extra

        _check_name(arch.model, timm.list_models(), "timm model")
        model = timm.create_model(
            arch.model, pretrained=False, num_classes=num_classes, in_chans=shape[0]
        )
    if arch.norm == "none":
        _drop_norms(model)
    return model


def _check_name(name: str, names: list[str], what: str) -> None:
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = ("close matches: " + ", ".join(close)) if close else "e.g. " + ", ".join(names[:5])
        raise bad_value("arch.model", name, f"not a {what}; {hint}")


def _drop_norms(module: nn.Module) -> None:
    for child_name, child in module.named_children():
        if isinstance(child, NORM_TYPES):
            setattr(module, child_name, nn.Identity())
        else:
            _drop_norms(child)
