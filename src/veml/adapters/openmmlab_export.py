"""MMDetection detectors as self-contained ONNX graphs, without mmdeploy.

mmdeploy (OpenMMLab's exporter) is not a dependency, so VeML writes the deployable graph itself: one
module that takes what every VeML detection deployment takes (one RGB image, 3 x S x S, values in
[0, 1]) and gives ``boxes`` (xyxy), ``scores`` and ``labels``, the contract ``veml predict`` runs with
onnxruntime and numpy alone (:mod:`veml.adapters.onnx_run`).  Inside it:

1. the model's data preprocessor: to 0-255, channel order, mean/std, padding to its size divisor;
2. the network itself: ``extract_feat`` and the dense head's forward (backbone, neck, head convolutions);
3. MMDetection's standard dense-head post-processing (``BaseDenseHead.predict_by_feat``): per level,
   sigmoid (or softmax) class scores, the ``nms_pre`` best (prior, class) pairs, the head's own
   ``bbox_coder.decode`` on its own priors, score factors (FCOS/ATSS centerness), ``score_thr``,
   then class-wise NMS (``torchvision.ops.batched_nms``, exported as ONNX NonMaxSuppression) and
   ``max_per_img``.

Heads that post-process their own way (YOLOX, GFL, two-stage detectors' RoI heads, …) are refused by
name: deploying them needs mmdeploy.  Every export is checked twice on the sample images: the graph's
module against MMDetection's own ``predict`` (same boxes for confident detections), and the ONNX file
against the module (the check every VeML deployment gets, :func:`veml.adapters.torch_export.export`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from veml.adapters.base import ExportOutcome, ModelSpec, TaskData
from veml.adapters.openmmlab_adapter import predict_model
from veml.adapters.openmmlab_config import first_line
from veml.adapters.torch_export import _compare_detection, export as torch_export
from veml.errors import InvalidInput


class Deployable(nn.Module):
    """An MMDetection dense detector as one traceable function of one image (see the module's docstring)."""

    def __init__(self, model: Any, image_size: int) -> None:
        super().__init__()
        from mmdet.models.dense_heads.base_dense_head import BaseDenseHead

        head = getattr(model, "bbox_head", None)
        kind = type(head).__name__ if head is not None else type(model).__name__
        if not isinstance(head, BaseDenseHead) or getattr(model, "with_rpn", False) \
                or type(head).predict_by_feat is not BaseDenseHead.predict_by_feat \
                or type(head)._predict_by_feat_single is not BaseDenseHead._predict_by_feat_single:
            raise InvalidInput(f"{kind} post-processes its predictions its own way: VeML exports dense heads that use "
                               "MMDetection's standard post-processing (RetinaNet, FCOS, ATSS, …); this one needs mmdeploy")
        dp = model.data_preprocessor
        self.model, self.head, self.size = model, head, int(image_size)
        self.flip = not bool(getattr(dp, "_channel_conversion", False))  # our input is RGB; the net sees BGR unless it converts
        normalise = bool(getattr(dp, "_enable_normalize", False))
        self.register_buffer("mean", dp.mean.detach().clone().reshape(3, 1, 1) if normalise else torch.zeros(3, 1, 1))
        self.register_buffer("std", dp.std.detach().clone().reshape(3, 1, 1) if normalise else torch.ones(3, 1, 1))
        divisor = int(getattr(dp, "pad_size_divisor", 1) or 1)
        self.pad = (-self.size) % divisor
        self.pad_value = float(getattr(dp, "pad_value", 0))
        cfg = head.test_cfg or {}
        self.nms_pre = int(cfg.get("nms_pre", -1))
        self.score_thr = float(cfg.get("score_thr", 0.0))
        nms = cfg.get("nms") or {}
        self.iou = float(nms.get("iou_threshold", 0.5))
        self.agnostic = bool(nms.get("class_agnostic", False))
        self.max_per_img = int(cfg.get("max_per_img", 100))
        if cfg.get("min_bbox_size", -1) >= 0:
            raise InvalidInput("test_cfg.min_bbox_size is not exported: remove it from the config to deploy")

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        from mmdet.structures.bbox import get_box_tensor

        x = images[0] * 255.0
        if self.flip:
            x = x.flip(0)
        x = (x - self.mean) / self.std
        if self.pad:
            x = nn.functional.pad(x, (0, self.pad, 0, self.pad), value=self.pad_value)
        outs = self.head(self.model.extract_feat(x[None]))
        factors = outs[2] if len(outs) > 2 else None
        priors = self.head.prior_generator.grid_priors([c.shape[-2:] for c in outs[0]], dtype=x.dtype, device=x.device)
        raw_l, prior_l, label_l, reg_l, factor_l = [], [], [], [], []
        for level, (cls, reg, pri) in enumerate(zip(outs[0], outs[1], priors)):
            cls = cls[0].permute(1, 2, 0).reshape(-1, self.head.cls_out_channels)
            scores = cls.sigmoid() if self.head.use_sigmoid_cls else cls.softmax(-1)[:, :-1]
            classes = int(scores.shape[1])
            flat = scores.reshape(-1)
            # the nms_pre best (prior, class) pairs of the level; mmdet thresholds first, which keeps the same set
            k = int(flat.shape[0]) if self.nms_pre <= 0 else min(self.nms_pre, int(flat.shape[0]))
            top, idx = flat.topk(k)
            prior_idx = torch.div(idx, classes, rounding_mode="floor")
            raw_l.append(top)
            label_l.append(idx - prior_idx * classes)
            prior_l.append(get_box_tensor(pri)[prior_idx])
            reg_l.append(reg[0].permute(1, 2, 0).reshape(-1, self.head.bbox_coder.encode_size)[prior_idx])
            if factors is not None:
                factor_l.append(factors[level][0].permute(1, 2, 0).reshape(-1).sigmoid()[prior_idx])
        raw, labels = torch.cat(raw_l), torch.cat(label_l)
        keep = raw > self.score_thr
        with _eager_branches():
            boxes = get_box_tensor(self.head.bbox_coder.decode(torch.cat(prior_l)[keep], torch.cat(reg_l)[keep],
                                                               max_shape=(self.size, self.size)))
        scores, labels = raw[keep], labels[keep]
        if factors is not None:
            scores = scores * torch.cat(factor_l)[keep]
        groups = torch.zeros_like(labels) if self.agnostic else labels
        order = torchvision.ops.batched_nms(boxes, scores, groups, self.iou)[: self.max_per_img]
        return [{"boxes": boxes[order], "scores": scores[order], "labels": labels[order]}]


@contextlib.contextmanager
def _eager_branches():
    """mmdet 3.3's box coders take an "ONNX" branch while torch exports, which imports ``mmdet.core`` (removed
    in mmdet 3): the single-image branch they take otherwise traces to the same graph, so it is the one taken."""
    real = torch.onnx.is_in_onnx_export
    torch.onnx.is_in_onnx_export = lambda: False
    try:
        yield
    finally:
        torch.onnx.is_in_onnx_export = real


def export(spec: ModelSpec, model: Any, sample: TaskData, quantize: str, device: str = "cpu") -> ExportOutcome:
    """``model`` (a trained MMDetection detector) as an ONNX deployment, checked on ``sample``'s images."""
    from veml.adapters.onnx_run import images_nchw

    module = Deployable(model, int(spec.parameters["image_size"])).eval()
    images = [torch.from_numpy(x) for x in images_nchw(sample.images, False)]
    theirs = predict_model(spec, model, sample).detections
    worst, diffs = 1.0, [0.0]
    with torch.no_grad():
        for image, (b, s, l) in zip(images, theirs):
            try:
                d = module([image])[0]
            except (RuntimeError, ValueError) as exc:  # e.g. GroupNorm on a 1x1 map of a single image
                raise InvalidInput(f"the model does not run on one {module.size}x{module.size} image, as a deployment "
                                   f"does: {first_line(exc)}") from None
            diff, agreement = _compare_detection([b, s, l], [d["boxes"].numpy(), d["scores"].numpy(), d["labels"].numpy()])
            worst, diffs = min(worst, agreement), diffs + [diff]
    if worst < 0.9 or max(diffs) > 1e-2 * module.size:
        raise InvalidInput(f"the exported graph's post-processing disagrees with MMDetection's predict "
                           f"(max |diff| {max(diffs):.3g}, {worst:.0%} of confident boxes matched on the worst image)")
    return torch_export(spec, module, [images[0]], "onnx", quantize, device)


__all__ = ["Deployable", "export"]
