"""Three ways to learn from captions, one image encoder: the CLIP paper's Figure 2 in code.

The CLIP paper (section 2.3, Figure 2) trained the same image encoder on the
same pairs with three objectives and watched zero-shot ImageNet accuracy grow:

* ``captioning``: predict the caption word by word (a transformer language
  model conditioned on the image) -- the slowest;
* ``bow``: predict the caption's *bag of words* (which words, in no order)
  -- about 3x faster to reach the same zero-shot accuracy;
* ``contrastive``: only say *which* caption in the batch goes with the image
  -- another ~4x faster (published, not run here).

Each objective here is a small ``nn.Module`` that sits beside a :class:`CLIP`
model and uses its image encoder (``model.encode_image``: the same tower,
the same features ``[batch, embed_dim]``). It has two methods:

* ``loss(model, images, tokens, eot_index)``: one scalar for a batch;
* ``class_scores(model, images, prompt_tokens, num_classes)``: zero-shot,
  ``[images, classes]``, from prompts ``[classes * templates, length]``
  (class-major: all templates of class 0, then class 1, ...).

How each one classifies zero-shot, with the same prompts:

* contrastive: cosine of the image with the mean (normalised) prompt embedding;
* bow: how well the image predicts each prompt's bag of tokens (mean
  log-probability of the prompt's tokens), averaged over templates;
* captioning: the log-likelihood of each prompt given the image, averaged over templates.

    >>> from clip_from_scratch.model import CLIP, CLIPConfig
    >>> config = CLIPConfig(embed_dim=16, image_resolution=8, vision_layers=1, vision_width=16,
    ...                     vision_patch_size=4, context_length=8, vocab_size=20,
    ...                     transformer_width=16, transformer_heads=2, transformer_layers=1)
    >>> model = CLIP(config)
    >>> images, tokens = torch.randn(3, 3, 8, 8), torch.tensor([[18, 5, 6, 19, 0, 0, 0, 0]] * 3)
    >>> for name in OBJECTIVES:
    ...     objective = make_objective(name, config)
    ...     loss = objective.loss(model, images, tokens, tokens.argmax(-1))
    ...     print(name, tuple(loss.shape), tuple(objective.class_scores(model, images, tokens, 1).shape))
    contrastive () (3, 1)
    bow () (3, 1)
    captioning () (3, 1)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .layers import LayerNorm, Transformer
from .loss import contrastive_loss
from .model import CLIP, CLIPConfig

#: The objectives, in the order of the paper's Figure 2 legend (fastest learner first).
OBJECTIVES = ("contrastive", "bow", "captioning")


def content_mask(tokens: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
    """True at a caption's own tokens: after start-of-text, before end-of-text (no padding).

    >>> content_mask(torch.tensor([[8, 3, 4, 9, 0]]), torch.tensor([3]))
    tensor([[False,  True,  True, False, False]])
    """
    positions = torch.arange(tokens.shape[1], device=tokens.device)              # [length]
    return (positions >= 1) & (positions < eot_index[:, None])                   # [batch, length]


def bag_of_tokens(tokens: torch.Tensor, eot_index: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Each caption's token *set* as a distribution: 1/k on each of its k distinct tokens, 0 elsewhere.

    >>> bag_of_tokens(torch.tensor([[8, 3, 4, 3, 9]]), torch.tensor([4]), vocab_size=6 + 4)[0, :5]
    tensor([0.0000, 0.0000, 0.0000, 0.5000, 0.5000])
    """
    counts = torch.zeros(tokens.shape[0], vocab_size, device=tokens.device)      # [batch, vocab]
    counts.scatter_add_(1, tokens, content_mask(tokens, eot_index).float())
    present = (counts > 0).float()                                               # a set: repeats count once
    return present / present.sum(dim=1, keepdim=True).clamp(min=1)


class ContrastiveObjective(nn.Module):
    """CLIP's own objective (loss.py) behind the same interface; it needs nothing beyond the model."""
    name = "contrastive"

    def loss(self, model, images, tokens, eot_index) -> torch.Tensor:
        image_features = F.normalize(model.encode_image(images).float(), dim=-1)        # [batch, embed_dim]
        text_features = F.normalize(model.encode_text(tokens, eot_index).float(), dim=-1)
        return contrastive_loss(image_features, text_features, model.logit_scale.exp())

    @torch.no_grad()
    def class_scores(self, model, images, prompt_tokens, num_classes: int) -> torch.Tensor:
        image_features = F.normalize(model.encode_image(images).float(), dim=-1)        # [images, embed_dim]
        prompts = F.normalize(model.encode_text(prompt_tokens).float(), dim=-1)         # [prompts, embed_dim]
        classes = F.normalize(prompts.view(num_classes, -1, prompts.shape[-1]).mean(1), dim=-1)
        return image_features @ classes.T                                               # [images, classes]


class BagOfWordsObjective(nn.Module):
    """Predict which tokens the caption contains, in no order: a linear head over the run's vocabulary.

    **Token set, not word set.** The target is the caption's set of BPE tokens
    (the run's own vocabulary), so the head and the zero-shot prompts need no
    second, word-level vocabulary. With the shapes run's 100 merges every colour
    and shape name ("red", "circle") is one token, so on the words zero-shot
    asks about, tokens and words coincide; a rarer word ("left") is split into
    pieces, each of which joins the bag. A repeated token counts once (a *set*).

    **Softmax over the normalised bag, not one sigmoid per word.** The loss is
    the cross-entropy between the head's softmax and the caption's tokens
    weighted 1/k each: the loss of a model that shares out its probability
    among the words it expects. Mahajan et al. (2018), training on hashtags,
    found this beats per-label sigmoids, and it makes zero-shot scoring a
    plain log-probability.
    """
    name = "bow"

    def __init__(self, embed_dim: int, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.head = nn.Linear(embed_dim, vocab_size)

    def log_probs(self, model, images) -> torch.Tensor:
        return F.log_softmax(self.head(model.encode_image(images).float()), dim=-1)    # [batch, vocab]

    def loss(self, model, images, tokens, eot_index) -> torch.Tensor:
        target = bag_of_tokens(tokens, eot_index, self.vocab_size)                      # [batch, vocab]
        return -(target * self.log_probs(model, images)).sum(dim=-1).mean()

    @torch.no_grad()
    def class_scores(self, model, images, prompt_tokens, num_classes: int) -> torch.Tensor:
        bags = bag_of_tokens(prompt_tokens, prompt_tokens.argmax(-1), self.vocab_size)  # [prompts, vocab]
        scores = self.log_probs(model, images) @ bags.T    # [images, prompts]: mean log p of each prompt's tokens
        return scores.view(scores.shape[0], num_classes, -1).mean(-1)                   # [images, classes]


class CaptioningObjective(nn.Module):
    """Predict the caption token by token: a small causal transformer that reads the image first.

    The image features, projected to the decoder's width, are the first token
    of the sequence; then come the caption's tokens from start-of-text on.
    Teacher forcing: position ``j`` sees the image and tokens ``0..j-1`` and
    is scored on token ``j``, for every token up to and including end-of-text.
    Built from the same blocks as the text encoder (layers.py), at the text
    encoder's size, so the two text-side models are the same size.
    """
    name = "captioning"

    def __init__(self, embed_dim: int, vocab_size: int, context_length: int, width: int, layers: int, heads: int):
        super().__init__()
        self.image_projection = nn.Linear(embed_dim, width)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, causal=True)
        self.ln_final = LayerNorm(width)
        self.next_token = nn.Linear(width, vocab_size)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def token_log_likelihood(self, image_features, tokens, eot_index) -> torch.Tensor:
        """``log p(caption | image)`` of each caption ``[batch]``: summed over its tokens after start-of-text."""
        length = int(eot_index.max()) + 1
        tokens = tokens[:, :length]                                                     # cut the padding
        x = torch.cat([self.image_projection(image_features)[:, None],                  # [batch, 1, width]
                       self.token_embedding(tokens[:, :-1])], dim=1)                    # [batch, length, width]
        x = self.transformer(x + self.positional_embedding[:length])
        log_probs = F.log_softmax(self.next_token(self.ln_final(x)).float(), dim=-1)   # [batch, length, vocab]
        picked = log_probs.gather(-1, tokens[..., None])[..., 0]                        # [batch, length]
        positions = torch.arange(length, device=tokens.device)
        scored = (positions >= 1) & (positions <= eot_index[:, None])                   # caption + end-of-text
        return (picked * scored).sum(dim=1)

    def loss(self, model, images, tokens, eot_index) -> torch.Tensor:
        image_features = model.encode_image(images)
        predicted_tokens = eot_index.sum()                                              # per caption: eot_index
        return -self.token_log_likelihood(image_features, tokens, eot_index).sum() / predicted_tokens

    @torch.no_grad()
    def class_scores(self, model, images, prompt_tokens, num_classes: int, chunk: int = 8192) -> torch.Tensor:
        image_features = model.encode_image(images)                                     # [images, embed_dim]
        eot_index = prompt_tokens.argmax(-1)
        prompt_tokens = prompt_tokens[:, :int(eot_index.max()) + 1]
        num_images, num_prompts = image_features.shape[0], prompt_tokens.shape[0]
        scores = torch.empty(num_images, num_prompts, device=image_features.device)
        per_chunk = max(1, chunk // num_prompts)       # every (image, prompt) pair is one sequence to score
        for start in range(0, num_images, per_chunk):
            features = image_features[start:start + per_chunk]
            n = features.shape[0]
            scores[start:start + n] = self.token_log_likelihood(
                features.repeat_interleave(num_prompts, dim=0), prompt_tokens.repeat(n, 1),
                eot_index.repeat(n)).view(n, num_prompts)
        return scores.view(num_images, num_classes, -1).mean(-1)                        # [images, classes]


def make_objective(name: str, config: CLIPConfig) -> nn.Module:
    """The objective ``name`` for a model of ``config`` (its head sized to the model's vocabulary)."""
    if name == "contrastive":
        return ContrastiveObjective()
    if name == "bow":
        return BagOfWordsObjective(config.embed_dim, config.vocab_size)
    if name == "captioning":
        return CaptioningObjective(config.embed_dim, config.vocab_size, config.context_length,
                                   config.transformer_width, config.transformer_layers, config.transformer_heads)
    raise ConfigError(f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}")


class CLIPWithObjective(CLIP):
    """A CLIP trained by another objective: the same towers, plus ``objective`` (its head) beside them.

    What a ``bow`` or ``captioning`` run trains and saves: the image encoder
    learns through the head; the text tower is built (so the checkpoint has
    CLIP's layout) but never trained. ``state_dict()`` holds CLIP's keys and
    ``objective.*``.

    >>> config = CLIPConfig(embed_dim=8, image_resolution=8, vision_layers=1, vision_width=8, vision_patch_size=4,
    ...                     context_length=8, vocab_size=20, transformer_width=8, transformer_heads=1,
    ...                     transformer_layers=1)
    >>> sorted({k.split(".")[0] for k in CLIPWithObjective(config, "bow").state_dict()})[:3]
    ['ln_final', 'logit_scale', 'objective']
    """

    def __init__(self, config: CLIPConfig, objective: str):
        if objective == "contrastive":
            raise ConfigError("a contrastive run trains a plain CLIP: use CLIP(config)")
        super().__init__(config)
        self.objective_name = objective
        self.objective = make_objective(objective, config)

    def loss(self, images, tokens, eot_index) -> torch.Tensor:
        return self.objective.loss(self, images, tokens, eot_index)

    def class_scores(self, images, prompt_tokens, num_classes: int) -> torch.Tensor:
        return self.objective.class_scores(self, images, prompt_tokens, num_classes)

    def training_network(self) -> nn.Module:
        """What the step runs (and DDP wraps): the image tower and the head, not the idle text tower."""
        return ImageSideLoss(self.visual, self.objective)


class ImageSideLoss(nn.Module):
    """``forward(images, tokens, eot_index) -> loss``: only parameters that get a gradient (DDP insists)."""

    def __init__(self, visual: nn.Module, objective: nn.Module):
        super().__init__()
        self.visual, self.objective = visual, objective

    def encode_image(self, images):
        return self.visual(images)

    def forward(self, images, tokens, eot_index):
        return self.objective.loss(self, images, tokens, eot_index)


def objective_of(model) -> nn.Module:
    """The objective a model was trained with: its head, or the contrastive one for a plain CLIP."""
    return model.objective if isinstance(model, CLIPWithObjective) else ContrastiveObjective()


@torch.no_grad()
def zeroshot_top1(objective, model, tokenize, images, labels, classnames, templates, batch_size: int = 500) -> float:
    """Top-1 (%) of images (normalised floats ``[N, 3, R, R]``) among ``classnames``, by ``objective``'s scores.

    ``tokenize(texts)`` gives the model's token ids. Model and objective are
    left in the mode they were in.
    """
    modes = model.training, objective.training
    model.eval(), objective.eval()
    device = next(model.parameters()).device
    prompts = [template.format(name) for name in classnames for template in templates]   # class-major
    prompt_tokens = tokenize(prompts).to(device)
    scores = torch.cat([objective.class_scores(model, chunk.to(device), prompt_tokens, len(classnames))
                        for chunk in images.split(batch_size)])
    model.train(modes[0]), objective.train(modes[1])
    return 100 * (scores.argmax(dim=1).cpu() == torch.as_tensor(labels)).float().mean().item()


def images_to_reach(images_seen, accuracy, target: float) -> float:
    """Images seen when an evaluation curve first reaches ``target`` (%), linear between evaluations.

    ``inf`` when it never does. Figure 2's efficiency ratio is the ratio of two of these.

    >>> images_to_reach([100, 200, 300], [10.0, 30.0, 50.0], 40.0)
    250.0
    >>> images_to_reach([100, 200], [10.0, 20.0], 40.0)
    inf
    """
    previous = (0, 0.0)            # before training: no images, no accuracy to speak of
    for seen, score in zip(images_seen, accuracy):
        if score >= target:
            (x0, y0), (x1, y1) = previous, (seen, score)
            return float(x1 if y1 == y0 else x0 + (target - y0) / (y1 - y0) * (x1 - x0))
        previous = (seen, score)
    return float("inf")
