"""CLIP's contrastive loss, its distributed form, its hard-negative form (NegCLIP), and the sigmoid (SigLIP) loss.

A batch of N (image, text) pairs gives an N x N matrix of similarities; the
N matching pairs sit on the diagonal, the N^2 - N others are negatives. The
loss is cross-entropy over the rows (each image picks its text) plus over the
columns (each text picks its image), averaged::

    image_features = F.normalize(model.encode_image(images), dim=-1)   # [N, embed_dim]
    text_features = F.normalize(model.encode_text(tokens), dim=-1)     # [N, embed_dim]
    loss = contrastive_loss(image_features, text_features, model.logit_scale.exp())

With perfectly matched, orthogonal features and ``logit_scale = 100`` the loss
is ~0; with random features it is ~ln(N).

Across several processes (``torchrun``), each one holds a slice of the global
batch. ``contrastive_loss(..., distributed=True)`` all-gathers the features so
every slice is contrasted against the whole global batch, exactly as
open_clip's ``ClipLoss(world_size=..., gather_with_grad=..., local_loss=...)``.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn  # differentiable collectives (all_gather with a backward)
import torch.nn.functional as F


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    """Fail early, in the user's terms, before a confusing matmul error."""
    for name, features in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
        if features.dim() != 2:
            raise ValueError(f"{name} must be 2-D [batch, embed_dim], got shape {tuple(features.shape)}")
    if image_features.shape[0] != text_features.shape[0]:
        raise ValueError(f"batch sizes differ: {image_features.shape[0]} images but {text_features.shape[0]} "
                         "texts. The contrastive loss needs one caption per image, in the same order.")
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(f"embedding widths differ: image_features has {image_features.shape[1]}, "
                         f"text_features {text_features.shape[1]}. Both encoders must project to embed_dim.")
    if image_features.shape[0] == 0:
        raise ValueError("the batch is empty: the contrastive loss needs at least one (image, text) pair")


def _distributed_info() -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("distributed=True needs torch.distributed to be initialised "
                           "(run under torchrun, or call torch.distributed.init_process_group first)")
    return dist.get_rank(), dist.get_world_size()


def gather_features(image_features: torch.Tensor, text_features: torch.Tensor,
                    local_loss: bool = False, gather_with_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather both feature matrices from every process: [N_local, D] -> [N_local * world_size, D].

    A plain ``dist.all_gather`` returns tensors with no autograd history, so the
    gradient of the loss would never reach the features another process sent.
    Two fixes, as in open_clip:

    * ``gather_with_grad=True``: ``torch.distributed.nn.all_gather`` is
      differentiable; its backward sums, on each process, the gradients every
      process computed for that process's slice.
    * ``gather_with_grad=False``: gather without history, then put this
      process's own (differentiable) features back in their slot, so at least
      the local gradient flows. (With ``local_loss=True`` open_clip skips
      this, since the local features enter the loss directly.)
    """
    rank, world_size = _distributed_info()
    if gather_with_grad:
        with warnings.catch_warnings():  # newer torch suggests a private API instead; this one is stable
            warnings.simplefilter("ignore", FutureWarning)
            all_image = torch.cat(torch.distributed.nn.all_gather(image_features), dim=0)
            all_text = torch.cat(torch.distributed.nn.all_gather(text_features), dim=0)
        return all_image, all_text
    gathered_image = [torch.zeros_like(image_features) for _ in range(world_size)]
    gathered_text = [torch.zeros_like(text_features) for _ in range(world_size)]
    dist.all_gather(gathered_image, image_features.contiguous())
    dist.all_gather(gathered_text, text_features.contiguous())
    if not local_loss:
        gathered_image[rank] = image_features  # keep the local gradient path
        gathered_text[rank] = text_features
    return torch.cat(gathered_image, dim=0), torch.cat(gathered_text, dim=0)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor | float, distributed: bool = False,
                     gather_with_grad: bool = True, local_loss: bool = False) -> torch.Tensor:
    """Symmetric cross-entropy over the N x N similarity matrix (CLIP, Figure 3).

    ``image_features``/``text_features``: [N, embed_dim], already L2-normalised,
    row i of one matching row i of the other. ``logit_scale``: the multiplier
    (``model.logit_scale.exp()``, i.e. 1/temperature), a scalar tensor or float.

    >>> features = torch.eye(3)
    >>> round(contrastive_loss(features, features, 100.0).item(), 6)
    0.0

    ``distributed=True`` (under torchrun): gather features from every process
    (see :func:`gather_features`). With ``local_loss=False`` every process
    computes the loss of the whole global batch; with ``local_loss=True`` only
    the rows of its own images and texts (less memory, the same gradient
    after DDP averages it, when ``gather_with_grad=True``).
    """
    _check_features(image_features, text_features)
    if distributed:
        rank, world_size = _distributed_info()
    else:
        rank, world_size = 0, 1

    if world_size > 1:
        all_image, all_text = gather_features(image_features, text_features, local_loss, gather_with_grad)
        if local_loss:
            logits_per_image = logit_scale * image_features @ all_text.T     # [N_local, N_global]
            logits_per_text = logit_scale * text_features @ all_image.T      # [N_local, N_global]
        else:
            logits_per_image = logit_scale * all_image @ all_text.T          # [N_global, N_global]
            logits_per_text = logits_per_image.T
    else:
        logits_per_image = logit_scale * image_features @ text_features.T   # [N, N]
        logits_per_text = logits_per_image.T                                # [N, N]

    # The right answer for row i is column i (offset by this process's slice for a local loss).
    labels = torch.arange(logits_per_image.shape[0], device=image_features.device)
    if world_size > 1 and local_loss:
        labels = labels + logits_per_image.shape[0] * rank
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def hard_negative_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                       negative_features: torch.Tensor, logit_scale: torch.Tensor | float,
                       distributed: bool = False, gather_with_grad: bool = True,
                       local_loss: bool = False) -> torch.Tensor:
    """CLIP's loss with one hard negative caption per image on the text side (NegCLIP).

    ``negative_features`` [N, embed_dim]: row i is a *false* caption close to
    caption i (its colours or its objects swapped, its words shuffled). Each
    image picks its caption among the N true captions **and** the N false ones
    (cross-entropy over an N x 2N matrix); each true caption picks its image
    among the N images, as in CLIP (the false captions have no image to pick).
    An image must now beat "a blue circle and a red square" with "a red circle
    and a blue square", which a bag of words cannot do.

    >>> features = torch.eye(3)
    >>> far = -torch.eye(3)        # each false caption points away from its image
    >>> round(hard_negative_loss(features, features, far, 100.0).item(), 6)
    0.0

    ``distributed``: as :func:`contrastive_loss`; the false captions are
    gathered from every process with the true ones (both ride in one gather).
    """
    _check_features(image_features, text_features)
    _check_features(image_features, negative_features)
    if distributed:
        rank, world_size = _distributed_info()
    else:
        rank, world_size = 0, 1
    width = text_features.shape[1]
    if world_size > 1:
        # One gather for both caption sets: [N_local, 2 D] -> [N_global, 2 D], then split again.
        all_image, both = gather_features(image_features, torch.cat([text_features, negative_features], dim=1),
                                          local_loss, gather_with_grad)
        all_text, all_negative = both[:, :width], both[:, width:]
    else:
        all_image, all_text, all_negative = image_features, text_features, negative_features
    images = image_features if world_size > 1 and local_loss else all_image
    texts = text_features if world_size > 1 and local_loss else all_text
    candidates = torch.cat([all_text, all_negative], dim=0)                # [N_global true + N_global false, D]
    logits_per_image = logit_scale * images @ candidates.T                 # [N(_local), 2 N_global]
    logits_per_text = logit_scale * texts @ all_image.T                     # [N(_local), N_global]
    labels = torch.arange(images.shape[0], device=image_features.device)
    if world_size > 1 and local_loss:
        labels = labels + images.shape[0] * rank
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                 logit_scale: torch.Tensor | float, logit_bias: torch.Tensor | float) -> torch.Tensor:
    """SigLIP's loss: every cell of the N x N matrix is its own yes/no question.

    Label +1 on the diagonal, -1 elsewhere; loss = -sum(log sigmoid(label *
    (scale * sim + bias))) / N. No softmax, so no row needs the others'
    logits, which makes it cheap to shard. SigLIP starts from scale 10 and
    bias -10, so that the many negatives start with a small loss.

    >>> f = torch.eye(2)
    >>> round(sigmoid_loss(f, f, 10.0, -5.0).item(), 4)   # 4 cells, each softplus(-5), / 2
    0.0134
    """
    _check_features(image_features, text_features)
    logits = logit_scale * image_features @ text_features.T + logit_bias  # [N, N]
    n = logits.shape[0]
    labels = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / n
