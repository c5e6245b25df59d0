"""The hard-negative (NegCLIP) loss: B x 2B image->text, B x B text->image, against a loop written by hand."""
import math

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from clip_from_scratch.loss import contrastive_loss, hard_negative_loss


def features(n, dim=16, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, dim, generator=generator, dtype=dtype), dim=-1)
    text = F.normalize(torch.randn(n, dim, generator=generator, dtype=dtype) + 0.5 * image, dim=-1)
    negative = F.normalize(torch.randn(n, dim, generator=generator, dtype=dtype) + 0.4 * image, dim=-1)
    return image, text, negative


def reference_loss(image, text, negative, scale):
    """Written from the definition, one row at a time: no matrix tricks, no cross_entropy."""
    n = image.shape[0]
    image_to_text, text_to_image = 0.0, 0.0
    for i in range(n):
        candidates = [scale * (image[i] * text[j]).sum() for j in range(n)]
        candidates += [scale * (image[i] * negative[j]).sum() for j in range(n)]   # the n false captions
        image_to_text = image_to_text - (candidates[i] - torch.logsumexp(torch.stack(candidates), 0))
        images = [scale * (text[i] * image[j]).sum() for j in range(n)]             # true captions only
        text_to_image = text_to_image - (images[i] - torch.logsumexp(torch.stack(images), 0))
    return (image_to_text / n + text_to_image / n) / 2


def loss_and_grads(loss_fn, image, text, negative, scale):
    leaves = [t.clone().requires_grad_() for t in (image, text, negative, scale)]
    loss = loss_fn(*leaves)
    loss.backward()
    return [loss.detach()] + [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_loss_and_gradients_equal_the_hand_written_reference(n):
    image, text, negative = features(n, seed=n)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    ours = loss_and_grads(hard_negative_loss, image, text, negative, scale)
    reference = loss_and_grads(reference_loss, image, text, negative, scale)
    for name, a, b in zip(["loss", "d image", "d text", "d negative", "d scale"], ours, reference):
        torch.testing.assert_close(a, b, msg=f"{name} differs from the reference")


def test_negatives_that_copy_the_true_captions_cost_exactly_log_2_over_2_more_than_clip():
    # Each image's softmax then holds every caption twice: its image->text term gains log 2.
    image, text, _ = features(6, seed=1)
    scale = torch.tensor(10.0, dtype=torch.float64)
    torch.testing.assert_close(hard_negative_loss(image, text, text.clone(), scale),
                               contrastive_loss(image, text, scale) + math.log(2) / 2)


def test_the_negatives_get_gradient_only_through_the_image_side():
    image, text, negative = features(4, seed=2)
    _, d_image, d_text, d_negative, _ = loss_and_grads(hard_negative_loss, image, text, negative,
                                                       torch.tensor(5.0, dtype=torch.float64))
    assert d_negative.abs().sum() > 0 and d_image.abs().sum() > 0 and d_text.abs().sum() > 0


def test_mismatched_negatives_raise_a_clear_error():
    image, text, negative = features(4)
    with pytest.raises(ValueError, match="batch sizes differ"):
        hard_negative_loss(image, text, negative[:3], 10.0)


# ---------------------------------------------------------------- two processes
WORLD_SIZE = 2
VARIANTS = [(True, False), (True, True), (False, False)]   # (gather_with_grad, local_loss)


def _worker(rank, port, image, text, negative, scale, results):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.set_num_threads(1)
        n = image.shape[0] // WORLD_SIZE
        local = slice(rank * n, (rank + 1) * n)
        results[rank] = {
            variant: loss_and_grads(
                lambda i, t, g, s: hard_negative_loss(i, t, g, s, distributed=True, gather_with_grad=variant[0],
                                                      local_loss=variant[1]),
                image[local], text[local], negative[local], scale)
            for variant in VARIANTS}
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_on_the_concatenated_batch(free_port):
    image, text, negative = features(8, seed=3)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    single = loss_and_grads(hard_negative_loss, image, text, negative, scale)
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port, image, text, negative, scale, results), nprocs=WORLD_SIZE, join=True)
    for variant in VARIANTS:
        per_rank = [results[rank][variant] for rank in range(WORLD_SIZE)]
        # DDP averages the ranks' losses (and, with the differentiable gather, their gradients).
        torch.testing.assert_close(sum(r[0] for r in per_rank) / WORLD_SIZE, single[0], msg=f"{variant}: loss")
        if variant[0]:
            for index, name in ((1, "image"), (2, "text"), (3, "negative")):
                grad = torch.cat([r[index] for r in per_rank]) / WORLD_SIZE
                torch.testing.assert_close(grad, single[index], msg=f"{variant}: d {name}")
