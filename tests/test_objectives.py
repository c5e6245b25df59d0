"""The three pre-training objectives of chapter 08 (objectives.py): shapes, learning, zero-shot scoring."""
import math

import pytest
import torch
import torch.nn.functional as F

from clip_from_scratch.errors import ConfigError
from clip_from_scratch.model import CLIP, CLIPConfig
from clip_from_scratch.objectives import OBJECTIVES, BagOfWordsObjective, bag_of_tokens, make_objective, zeroshot_top1
from clip_from_scratch.zeroshot import zero_shot_classifier

VOCAB = 24
SOT, EOT = VOCAB - 2, VOCAB - 1
CONFIG = CLIPConfig(embed_dim=16, image_resolution=8, vision_layers=1, vision_width=16, vision_patch_size=4,
                    context_length=8, vocab_size=VOCAB, transformer_width=16, transformer_heads=2,
                    transformer_layers=1)


def captions(*bodies, length=8):
    """Token ids [batch, length]: sot, the body, eot, zero padding."""
    rows = [[SOT, *body, EOT] + [0] * (length - len(body) - 2) for body in bodies]
    return torch.tensor(rows)


def setup(name, seed=0):
    torch.manual_seed(seed)
    return CLIP(CONFIG), make_objective(name, CONFIG)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_shapes_of_every_output(name):
    model, objective = setup(name)
    images, tokens = torch.randn(5, 3, 8, 8), captions([1, 2], [3], [4, 5, 6], [1], [2, 2])
    loss = objective.loss(model, images, tokens, tokens.argmax(-1))
    assert loss.shape == () and torch.isfinite(loss)
    prompts = captions([1, 2], [1, 3], [4, 2], [4, 3], [5, 2], [5, 3])     # 3 classes x 2 templates
    assert objective.class_scores(model, images, prompts, num_classes=3).shape == (5, 3)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_loss_falls_on_a_batch_it_can_memorise(name):
    model, objective = setup(name)
    images, tokens = torch.randn(4, 3, 8, 8), captions([1, 2], [3, 4], [5, 6], [7, 8])
    parameters = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    losses = []
    for _ in range(60):
        loss = objective.loss(model, images, tokens, tokens.argmax(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_bag_of_tokens_is_the_caption_token_set_spread_evenly():
    bag = bag_of_tokens(captions([3, 5, 3]), torch.tensor([4]), VOCAB)
    expected = torch.zeros(VOCAB)
    expected[[3, 5]] = 0.5                      # sot, eot and padding are not words; the repeat counts once
    assert torch.equal(bag[0], expected)


def test_bow_zero_shot_scores_a_hand_computed_case():
    torch.manual_seed(0)
    objective = BagOfWordsObjective(embed_dim=2, vocab_size=VOCAB)
    with torch.no_grad():
        objective.head.weight.zero_()
        objective.head.bias.zero_()
        objective.head.bias[[1, 2]] = math.log(4)       # p(1) = p(2) = 4 / (22 + 8); every other token 1 / 30

    class Features(torch.nn.Module):   # an image encoder that returns zeros: only the bias speaks
        def encode_image(self, images):
            return torch.zeros(len(images), 2)

    prompts = captions([1, 2], [1, 3], [3, 5], [3, 6])  # class 0: "1 2", "1 3"; class 1: "3 5", "3 6"
    scores = objective.class_scores(Features(), torch.zeros(1, 3, 8, 8), prompts, num_classes=2)
    high, low = math.log(4 / 30), math.log(1 / 30)
    expected = torch.tensor([[((high + high) / 2 + (high + low) / 2) / 2, low]])
    torch.testing.assert_close(scores, expected)


def test_captioning_scores_the_log_likelihood_of_each_prompt_given_the_image():
    model, objective = setup("captioning")
    model.eval(), objective.eval()
    image = torch.randn(1, 3, 8, 8)
    features = model.encode_image(image)
    prompt = [1, 2]
    # By hand: feed the prefix one token at a time and add up log p of the next token, eot included.
    total = 0.0
    sequence = [SOT]
    for next_token in prompt + [EOT]:
        x = torch.cat([objective.image_projection(features)[:, None],
                       objective.token_embedding(torch.tensor([sequence]))], dim=1)
        x = objective.transformer(x + objective.positional_embedding[:x.shape[1]])
        log_probs = F.log_softmax(objective.next_token(objective.ln_final(x[:, -1])), dim=-1)
        total += log_probs[0, next_token].item()
        sequence.append(next_token)
    prompts = captions(prompt, [3], [4, 5, 6], [2])          # 2 classes x 2 templates
    scores = objective.class_scores(model, image, prompts, num_classes=2)
    other = objective.token_log_likelihood(features, captions([3]), torch.tensor([2])).item()
    assert scores[0, 0].item() == pytest.approx((total + other) / 2, abs=1e-4)
    # padding never changes a caption's likelihood (causal attention, masked positions)
    short = objective.token_log_likelihood(features, captions(prompt, length=5), torch.tensor([3]))
    assert short.item() == pytest.approx(total, abs=1e-4)


def test_contrastive_zero_shot_agrees_with_the_zero_shot_classifier():
    model, objective = setup("contrastive")
    model.eval()
    images = torch.randn(6, 3, 8, 8)
    names, templates = ["1", "2", "3"], ["a {}", "b {}"]
    tokenize = lambda texts: captions(*[[int(t) for t in text.replace("a", "10").replace("b", "11").split()]
                                        for text in texts])
    classifier = zero_shot_classifier(model, names, templates, tokenizer=tokenize, progress=False)
    expected = F.normalize(model.encode_image(images), dim=-1) @ classifier
    prompts = tokenize([t.format(n) for n in names for t in templates])
    torch.testing.assert_close(objective.class_scores(model, images, prompts, 3), expected)
    model.train()
    top1 = zeroshot_top1(objective, model, tokenize, images, expected.argmax(1), names, templates)
    assert top1 == 100.0
    assert model.training   # scored in eval mode, handed back as it came


def test_unknown_objective_is_one_line():
    with pytest.raises(ConfigError, match="choose one of contrastive, bow, captioning"):
        make_objective("mse", CONFIG)
