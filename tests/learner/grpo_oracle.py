"""Reference values for learner/grpo.h, written in PyTorch from the formulas of verl
(verl/trainer/ppo/core_algos.py: compute_grpo_outcome_advantage, agg_loss,
compute_policy_loss_vanilla, kl_penalty) and TRL (GRPOTrainer: scale_rewards, the
clipped per-token loss, the dr_grpo normaliser).

  grpo_oracle.py --out DIR

writes DIR/inputs.safetensors (random rewards, log-probs, masks, entropies) and
DIR/cases.json + DIR/expected.safetensors: for each case, the loss and its parts and the
gradients of the loss with respect to the current log-probs and the entropies.
tests/learner/grpo_test.cc computes the same with microrl and compares within 1e-5.
"""
import argparse
import itertools
import json
import os

import torch
from safetensors.torch import save_file

GROUP = 4
GROUPS = 6
T = 9


# ------------------------------------------------------------------ the reference formulas
def advantages(rewards, group_size, norm, eps):
    """verl's compute_grpo_outcome_advantage (norm 'group'/'none'); TRL's
    scale_rewards='batch' for norm 'batch'."""
    r = rewards.view(-1, group_size)
    if group_size == 1:
        mean, std = torch.zeros_like(r), torch.ones_like(r)
    else:
        mean = r.mean(1, keepdim=True)
        std = r.std(1, keepdim=True)
    if norm == "group":
        out = (r - mean) / (std + eps)
    elif norm == "none":
        out = r - mean
    else:
        out = (r - mean) / (rewards.std() + eps)
    return out.reshape(-1)


def agg_loss(loss, mask, mode, tokens, sequences, horizon):
    """verl's agg_loss with global batch counts."""
    if mode == "token-mean":
        return (loss * mask).sum() / tokens
    seq_valid = (mask.sum(-1) > 0).float()
    if mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        out = ((loss * mask).sum(-1) * seq_valid).sum() / sequences
        return out / horizon if mode == "seq-mean-token-sum-norm" else out
    if mode == "seq-mean-token-mean":
        per = (loss * mask).sum(-1) / (mask.sum(-1) + 1e-8)
        return (per * seq_valid).sum() / sequences
    raise ValueError(mode)


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def policy_loss(logprob, old_logprob, adv, mask, clip_low, clip_high, dual_clip, mode,
                tokens, sequences, horizon, weights=None):
    """verl's compute_policy_loss_vanilla (dual-clip optional)."""
    adv = adv.unsqueeze(1)
    neg_kl = torch.clamp(logprob - old_logprob, -20.0, 20.0)
    ratio = torch.exp(neg_kl)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    c1 = torch.maximum(l1, l2)
    # TRL writes the same clipped loss as -min(r A, clip(r) A).
    trl = -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv)
    assert torch.allclose(c1, trl)
    clipfrac = masked_mean(torch.gt(l2, l1).float(), mask)
    if dual_clip > 1:
        l3 = -adv * dual_clip
        losses = torch.where(adv < 0, torch.min(l3, c1), c1)
        dual = masked_mean(torch.gt(c1, l3).float() * (adv < 0).float(), mask)
    else:
        losses = c1
        dual = torch.tensor(0.0)
    high = masked_mean(((ratio > 1 + clip_high) & (adv > 0)).float(), mask)
    low = masked_mean(((ratio < 1 - clip_low) & (adv < 0)).float(), mask)
    # verl's single clip fraction is the two sides together.
    assert torch.allclose(clipfrac, high + low)
    if weights is not None:
        losses = losses * weights
    loss = agg_loss(losses, mask, mode, tokens, sequences, horizon)
    return loss, high, low, dual, masked_mean(-neg_kl, mask)


def off_policy_weights(old_logprob, rollout_logprob, mask, cap, mask_mode, low, high):
    """Truncated importance sampling as verl applies it (compute_policy_loss:
    pg_losses * clamp(exp(old_log_prob - rollout_log_probs), max=tis_imp_ratio_cap)), and
    rejection of tokens or sequences whose ratio is outside [low, high] (verl's rollout
    importance sampling, mask mode, token and geometric levels)."""
    log_ratio = torch.clamp((old_logprob - rollout_logprob) * mask, -20, 20)
    ratio = torch.exp(log_ratio)
    weights = torch.clamp(ratio, max=cap) if cap > 0 else torch.ones_like(ratio)
    truncated = (ratio > cap).float() * mask if cap > 0 else torch.zeros_like(ratio)
    if mask_mode == "token":
        keep = ((ratio >= low) & (ratio <= high)).float()
    elif mask_mode == "sequence":
        geometric = torch.exp(log_ratio.sum(-1) / mask.sum(-1).clamp(min=1)).unsqueeze(1)
        keep = ((geometric >= low) & (geometric <= high)).float().expand_as(ratio)
    else:
        keep = torch.ones_like(ratio)
    return weights * keep, truncated, (1 - keep) * mask


def kl_penalty(logprob, ref_logprob, estimator):
    """verl's kl_penalty_forward."""
    if estimator == "k1":
        return logprob - ref_logprob
    if estimator == "k2":
        return 0.5 * (logprob - ref_logprob).square()
    kl = torch.clamp(ref_logprob - logprob, -20, 20)
    return torch.clamp(torch.exp(kl) - kl - 1, -10, 10)


# ----------------------------------------------------------------------------- the cases
def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    n = GROUP * GROUPS
    rewards = torch.tensor([0.0, 0.1, 1.0, 1.1])[torch.randint(0, 4, (n,), generator=g)]
    rewards[:GROUP] = 1.1  # one zero-variance group
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    lengths[5] = 0  # a sequence with no valid token
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).float()
    logprob = -torch.rand(n, T, generator=g) * 3
    # Old log-probs mostly within +-0.5 of the current ones, so ratios span both clip
    # sides; a few within +-2, so that dual-clip (ratio > 3) acts too.
    wide = torch.where(torch.rand(n, T, generator=g) < 0.15, 4.0, 1.0)
    old_logprob = logprob + (torch.rand(n, T, generator=g) - 0.5) * wide
    ref_logprob = logprob + (torch.rand(n, T, generator=g) - 0.5) * 0.6
    entropy = torch.rand(n, T, generator=g) * 2
    inputs = dict(rewards=rewards, mask=mask, logprob=logprob, old_logprob=old_logprob,
                  ref_logprob=ref_logprob, entropy=entropy)
    save_file(inputs, os.path.join(args.out, "inputs.safetensors"))

    expected = {}
    cases = []
    for norm, eps, group_size in [("group", 1e-6, GROUP), ("none", 1e-6, GROUP),
                                  ("batch", 1e-4, GROUP), ("group", 1e-6, 1)]:
        name = f"adv_{norm}_{group_size}"
        expected[name] = advantages(rewards, group_size, norm, eps)
        cases.append(dict(kind="advantages", name=name, norm=norm, epsilon=eps,
                          group_size=group_size))
    adv = expected["adv_group_4"]
    expected["zero_variance"] = (rewards.view(-1, GROUP) == rewards.view(-1, GROUP)[:, :1]) \
        .all(1, keepdim=True).expand(-1, GROUP).reshape(-1).float()

    tokens = mask.sum()
    sequences = (mask.sum(-1) > 0).float().sum()
    horizon = float(T + 3)
    modes = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
             "seq-mean-token-sum-norm"]
    clips = [(0.2, 0.2), (0.2, 0.28)]
    for i, (mode, (clip_low, clip_high), dual_clip, estimator) in enumerate(
            itertools.product(modes, clips, [3.0, 0.0], ["k1", "k2", "k3"])):
        kl_coef, entropy_coef = 0.1, 0.01
        lp = logprob.clone().requires_grad_(True)
        ent = entropy.clone().requires_grad_(True)
        pg, high, low, dual, approx_kl = policy_loss(
            lp, old_logprob, adv, mask, clip_low, clip_high, dual_clip, mode, tokens,
            sequences, horizon)
        kl = agg_loss(kl_penalty(lp, ref_logprob, estimator), mask, mode, tokens, sequences,
                      horizon)
        ent_agg = agg_loss(ent, mask, mode, tokens, sequences, horizon)
        loss = pg + kl_coef * kl - entropy_coef * ent_agg
        loss.backward()
        name = f"loss_{i}"
        for key, value in dict(loss=loss, pg=pg, kl=kl, entropy=ent_agg, high=high, low=low,
                               dual=dual, approx_kl=approx_kl).items():
            expected[f"{name}.{key}"] = value.detach().reshape(1)
        expected[f"{name}.grad_logprob"] = lp.grad
        expected[f"{name}.grad_entropy"] = ent.grad
        cases.append(dict(kind="loss", name=name, aggregation=mode, clip_low=clip_low,
                          clip_high=clip_high, dual_clip=dual_clip, kl_estimator=estimator,
                          kl_coef=kl_coef, entropy_coef=entropy_coef, horizon=horizon))
    # Off-policy correction: rollout log-probs some steps older than the old ones (their
    # own generator, so the inputs above stay as they were).
    g_rollout = torch.Generator().manual_seed(1)
    spread = torch.where(torch.rand(n, T, generator=g_rollout) < 0.2, 3.0, 0.8)
    rollout_logprob = old_logprob + (torch.rand(n, T, generator=g_rollout) - 0.5) * spread
    inputs["rollout_logprob"] = rollout_logprob
    save_file(inputs, os.path.join(args.out, "inputs.safetensors"))
    for i, (mode, (cap, mask_mode, low, high)) in enumerate(itertools.product(
            ["token-mean", "seq-mean-token-mean"],
            [(2.0, "none", 0.5, 2.0), (2.0, "token", 0.5, 2.0), (0.0, "token", 0.7, 1.3),
             (1.5, "sequence", 0.8, 1.25), (0.0, "sequence", 0.9, 1.1)])):
        lp = logprob.clone().requires_grad_(True)
        weights, truncated, masked = off_policy_weights(old_logprob, rollout_logprob, mask,
                                                        cap, mask_mode, low, high)
        pg = policy_loss(lp, old_logprob, adv, mask, 0.2, 0.28, 3.0, mode, tokens,
                         sequences, horizon, weights)[0]
        pg.backward()
        name = f"off_policy_{i}"
        expected[f"{name}.pg"] = pg.detach().reshape(1)
        expected[f"{name}.grad_logprob"] = lp.grad
        expected[f"{name}.weights"] = weights
        expected[f"{name}.truncated"] = truncated
        expected[f"{name}.masked"] = masked
        cases.append(dict(kind="off_policy", name=name, aggregation=mode, tis_cap=cap,
                          mask=mask_mode, low=low, high=high, horizon=horizon))
    # AdamW (torch.optim.AdamW) with gradient clipping (clip_grad_norm_) under the cosine
    # schedule with warmup of transformers, 5 steps on two parameters.
    from transformers import get_cosine_schedule_with_warmup
    params = [torch.randn(3, 5, generator=g), torch.randn(7, generator=g)]
    expected["opt.param0.init"], expected["opt.param1.init"] = params[0].clone(), params[1].clone()
    live = [p.clone().requires_grad_(True) for p in params]
    optimizer = torch.optim.AdamW(live, lr=3e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    schedule = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=6)
    lrs = []
    for step in range(5):
        grads = [torch.randn(p.shape, generator=g) * 3 for p in live]
        for i, (p, grad) in enumerate(zip(live, grads)):
            p.grad = grad.clone()
            expected[f"opt.step{step}.grad{i}"] = grad
        lrs.append(optimizer.param_groups[0]["lr"])
        norm = torch.nn.utils.clip_grad_norm_(live, 1.0)
        expected[f"opt.step{step}.norm"] = norm.reshape(1)
        optimizer.step()
        schedule.step()
        for i, p in enumerate(live):
            expected[f"opt.step{step}.param{i}"] = p.detach().clone()
    expected["opt.lrs"] = torch.tensor(lrs, dtype=torch.float64)
    cases.append(dict(kind="optimizer", steps=5, lr=3e-2, beta1=0.9, beta2=0.95, epsilon=1e-8,
                      weight_decay=0.1, warmup=2, total=6, max_norm=1.0))

    save_file({k: v.contiguous() for k, v in expected.items()},
              os.path.join(args.out, "expected.safetensors"))
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print(f"{len(cases)} cases written to {args.out}")


if __name__ == "__main__":
    main()
