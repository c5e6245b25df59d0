"""The contrastive loss equals open_clip's ClipLoss, in one process and across two."""

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from clip_from_scratch.loss import contrastive_loss, sigmoid_loss

open_clip_loss = pytest.importorskip("open_clip.loss")


def random_features(n, dim=32, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, dim, generator=generator, dtype=dtype), dim=-1)
    text = F.normalize(torch.randn(n, dim, generator=generator, dtype=dtype), dim=-1)
    # Make the pairs related, so the loss is neither trivial nor uniform.
    text = F.normalize(text + 0.5 * image, dim=-1)
    return image, text


def loss_and_grads(loss_fn, image, text, scale):
    image, text = image.clone().requires_grad_(), text.clone().requires_grad_()
    scale = scale.clone().requires_grad_()
    loss = loss_fn(image, text, scale)
    loss.backward()
    return loss.detach(), image.grad, text.grad, scale.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("batch_size", [1, 2, 7, 64, 300])
def test_loss_and_gradients_equal_open_clip(batch_size, dtype):
    image, text = random_features(batch_size, dtype=dtype, seed=batch_size)
    scale = torch.tensor(1 / 0.07, dtype=dtype)
    ours = loss_and_grads(contrastive_loss, image, text, scale)
    reference = loss_and_grads(open_clip_loss.ClipLoss(), image, text, scale)
    for name, a, b in zip(["loss", "d image", "d text", "d logit_scale"], ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7 if dtype == torch.float32 else 1e-12,
                                   msg=f"{name} differs from open_clip's ClipLoss")


def test_perfect_alignment_gives_near_zero_loss_and_random_gives_log_n():
    features = torch.eye(8)
    assert contrastive_loss(features, features, 100.0) < 1e-6
    same = torch.ones(8, 4) / 2   # every similarity equal: the model can't tell pairs apart
    assert contrastive_loss(same, same, 100.0).item() == pytest.approx(torch.log(torch.tensor(8.0)).item())


def test_sigmoid_loss_equals_open_clip_siglip():
    image, text = random_features(16)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    ours = sigmoid_loss(image, text, scale, bias)
    reference = open_clip_loss.SigLipLoss()(image, text, scale, bias)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss_fn", [contrastive_loss, lambda i, t, s: sigmoid_loss(i, t, s, 0.0)],
                         ids=["contrastive", "sigmoid"])
def test_mismatched_batch_sizes_raise_a_clear_error(loss_fn):
    with pytest.raises(ValueError, match="batch sizes differ: 4 images but 3 texts"):
        loss_fn(torch.randn(4, 8), torch.randn(3, 8), 10.0)


def test_mismatched_widths_and_ranks_raise_clear_errors():
    with pytest.raises(ValueError, match="embedding widths differ"):
        contrastive_loss(torch.randn(4, 8), torch.randn(4, 6), 10.0)
    with pytest.raises(ValueError, match=r"must be 2-D \[batch, embed_dim\]"):
        contrastive_loss(torch.randn(4, 8, 1), torch.randn(4, 8), 10.0)
    with pytest.raises(ValueError, match="empty"):
        contrastive_loss(torch.randn(0, 8), torch.randn(0, 8), 10.0)


def test_distributed_without_process_group_says_how_to_start_one():
    with pytest.raises(RuntimeError, match="torchrun"):
        contrastive_loss(torch.eye(2), torch.eye(2), 10.0, distributed=True)


# ---------------------------------------------------------------- two processes
WORLD_SIZE = 2
VARIANTS = [(True, False), (True, True), (False, False), (False, True)]  # (gather_with_grad, local_loss)


def _worker(rank, port, image, text, scale, results):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.set_num_threads(1)
        n = image.shape[0] // WORLD_SIZE
        local = slice(rank * n, (rank + 1) * n)
        out = {}
        for gather_with_grad, local_loss in VARIANTS:
            ours = loss_and_grads(
                lambda i, t, s: contrastive_loss(i, t, s, distributed=True, gather_with_grad=gather_with_grad,
                                                 local_loss=local_loss),
                image[local], text[local], scale)
            reference = loss_and_grads(
                open_clip_loss.ClipLoss(rank=rank, world_size=WORLD_SIZE, gather_with_grad=gather_with_grad,
                                        local_loss=local_loss),
                image[local], text[local], scale)
            out[(gather_with_grad, local_loss)] = (ours, reference)
        results[rank] = out
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_on_the_concatenated_batch(free_port):
    image, text = random_features(12, dtype=torch.float64, seed=3)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    single_loss, single_image_grad, single_text_grad, single_scale_grad = loss_and_grads(
        contrastive_loss, image, text, scale)

    results = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port, image, text, scale, results), nprocs=WORLD_SIZE, join=True)

    for variant in VARIANTS:
        per_rank = [results[rank][variant] for rank in range(WORLD_SIZE)]
        for rank, (ours, reference) in enumerate(per_rank):
            for name, a, b in zip(["loss", "d image", "d text", "d logit_scale"], ours, reference):
                torch.testing.assert_close(a, b, msg=f"{variant} rank {rank}: {name} differs from open_clip")
        # DDP averages the ranks' losses and gradients. With the differentiable gather,
        # that average is exactly the single-process loss and gradient on the whole batch.
        gather_with_grad, local_loss = variant
        mean_loss = sum(ours[0] for ours, _ in per_rank) / WORLD_SIZE
        torch.testing.assert_close(mean_loss, single_loss, msg=f"{variant}: mean loss differs")
        if gather_with_grad:
            image_grad = torch.cat([ours[1] for ours, _ in per_rank]) / WORLD_SIZE
            text_grad = torch.cat([ours[2] for ours, _ in per_rank]) / WORLD_SIZE
            scale_grad = sum(ours[3] for ours, _ in per_rank) / WORLD_SIZE
            torch.testing.assert_close(image_grad, single_image_grad,
                                       msg=f"{variant}: image gradients differ from one process")
            torch.testing.assert_close(text_grad, single_text_grad,
                                       msg=f"{variant}: text gradients differ from one process")
            torch.testing.assert_close(scale_grad, single_scale_grad,
                                       msg=f"{variant}: logit_scale gradient differs from one process")
