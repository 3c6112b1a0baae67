"""The AMAGO update, written top to bottom as math (arXiv 2310.09971, Sec. 4; ``amago_reference.md`` Sec. 2).

Notation: a batch of ``B`` windows of ``W`` timesteps; ``s_t`` the shared trajectory-encoder features; ``G`` discount
factors ``gamma_g``; ``C`` critics; ``m_t`` the valid-transition mask (transition ``t`` is valid iff row ``t + 1`` is).

1. ``s = TrajEncoder(TimestepEncoder(o))`` once for the whole window; actor and critics share it.
2. Target (no gradient): ``a' ~ pi_targ(s_{t+1})``, ``y_cg = k * r_t + gamma_g * (1 - d_t) * Qbar_cg(s_{t+1}, a')`` with
   ``k = reward_multiplier`` and ``Qbar`` the de-normalized target critics (discrete: expectation over ``pi_targ``);
   then ``y_g = min`` over a random subset of ``num_critics_td`` critics, drawn per (b, t, g) (mean if ``online_coeff``
   is 0, since the min underestimates without a policy-gradient term).
3. PopArt: update per-gamma statistics of ``y``, then ``L_critic = mean_m (w Q_cg(s_t, a_t) + b - (y_g - mu_g) / sigma_g)^2``.
4. Actor, per gamma head ``g``: ``L_online = -PopArt(min_c Q_cg(s_t, a~pi_g))`` (discrete: ``sum_a pi_g(a) Q_cg(s_t, a)``,
   Box: reparameterized sample clamped to +-0.999 at the critic input, MultiDiscrete: straight-through sample),
   with the critic's *parameters detached* so that this term trains the actor and the encoder but never the critics
   (one backward pass instead of AMAGO's two).
   ``L_bc = -1[A_g > 0] * log pi_g(a_t | s_t)`` with ``A_g = mean_c Q_cg(s_t, a_t) - mean_c Q_cg(s_t, a~pi_g)``
   (filtered behaviour cloning: imitate replay actions that the critics rate above the policy).
   Box only, SAC's entropy term (``ent_coef``; the original has none): ``L_online += alpha_g * log pi_g(a~pi_g)``
   with the same reparameterized sample, and for a learned coefficient
   ``L_alpha = mean_m -log(alpha_g) * (log pi_g(a~pi_g) + H_target)`` (detached log-probability), so ``alpha_g``
   grows while the entropy is below ``H_target`` and shrinks above it. ``alpha`` weighs nats against
   PopArt-normalized values, i.e. in units of ``sigma_g``; the TD target keeps no entropy bonus (as the original).
   ``L_actor = mean_m (online_coeff * L_online + offline_coeff * L_bc)``.
5. ``L = L_actor + critic_coeff * L_critic + L_alpha`` (one backward pass, one optimizer for everything).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amago_sb.replay import Batch

__all__ = ["LossConfig", "amago_loss", "masked_mean"]


@dataclass
class LossConfig:
    """Coefficients of the update (see the module docstring)."""

    reward_multiplier: float = 10.0
    num_critics_td: int = 2
    online_coeff: float = 1.0
    offline_coeff: float = 0.1
    critic_coeff: float = 10.0


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``(B, T, ...)`` over the entries where ``mask`` ``(B, T)`` is true."""
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim()))).to(x.dtype)
    n = m.sum() * (x.numel() / max(m.numel(), 1))
    return (x * m).sum() / n.clamp_min(1.0)


def amago_loss(
    policy, batch: Batch, cfg: LossConfig, want_entropy: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss of one update and detached statistics for logging (``policy``: an ``AMAGOPolicy``)."""
    spec, gammas, popart = policy.spec, policy.gammas, policy.popart
    tmask = batch.mask[:, 1:]  # (B, W-1) valid transitions
    r, done = batch.rewards, batch.terminated  # (B, W-1)

    alpha = policy.ent_coef()  # (G,) or None
    # 1. shared encoder, one pass over the window
    s, entropies = policy.encode(batch.observations, batch.time_idx, batch.mask, want_entropy)  # (B, W, D)
    s_t, s_next = s[:, :-1], s[:, 1:]  # (B, W-1, D)
    pi = spec.dist(policy.actor(s_t))  # per gamma: (B, W-1, G, ...)
    a_buf = spec.normalize(batch.actions)  # (B, W-1, *a): Box in [-1, 1], ids otherwise

    # 2. TD targets from the Polyak target heads on the online features
    with torch.no_grad():
        pi_next = spec.dist(policy.target_actor(s_next))
        if spec.discrete:
            q_next = policy.target_critics(s_next)  # (B, W-1, C, G, A)
            q_next = (q_next * pi_next.probs.unsqueeze(2)).sum(-1)  # (B, W-1, C, G): E_{a'~pi}[Q]
        else:
            q_next = policy.target_critics(s_next, spec.critic_input(pi_next.sample()))  # (B, W-1, C, G)
        q_next = popart.denormalized(q_next)
        y = cfg.reward_multiplier * r[..., None, None] + gammas * (1.0 - done[..., None, None]) * q_next  # (B, W-1, C, G)
        if cfg.online_coeff > 0:
            C = y.shape[2]
            pick = torch.randint(C, (*y.shape[:2], cfg.num_critics_td, y.shape[3]), device=y.device)
            y = torch.take_along_dim(y, pick, dim=2).min(dim=2, keepdim=True).values  # (B, W-1, 1, G)
        else:
            y = y.mean(dim=2, keepdim=True)

        # 3a. PopArt statistics from this batch's targets
        popart.update_stats(y, tmask[..., None, None])
        y_norm = popart.normalize_target(y)  # (B, W-1, 1, G)

    # 3b. critic regression in normalized units
    if spec.discrete:
        q_all = policy.critics(s_t)  # (B, W-1, C, G, A)
        idx = a_buf.long()[..., None, None, None].expand(*q_all.shape[:-1], 1)
        q_buf = q_all.gather(-1, idx).squeeze(-1)  # (B, W-1, C, G)
    else:
        a_in = spec.critic_input(a_buf).unsqueeze(-2).expand(*a_buf.shape[:2], len(gammas), -1)
        q_buf = policy.critics(s_t, a_in)  # (B, W-1, C, G)
    critic_loss = masked_mean((popart.normalized(q_buf) - y_norm) ** 2, tmask)

    # 4. actor: online -Q (critic parameters detached) + filtered behaviour cloning
    if spec.discrete:
        q_pi = (q_all.detach() * pi.probs.unsqueeze(2)).sum(-1)  # (B, W-1, C, G), gradient only through pi
    else:
        if alpha is not None:
            a_pi, logp_pi = pi.rsample_with_log_prob()  # (B, W-1, G, A), (B, W-1, G)
            a_pi = spec.critic_input(a_pi)
        else:
            a_pi = spec.critic_input(spec.differentiable_action(pi))  # reparameterized / straight-through: (B, W-1, G, A_in)
        q_pi = policy.critics(s_t.detach(), a_pi, detach_params=True)  # (B, W-1, C, G)
    online = -popart.normalized(q_pi.min(dim=2).values)  # (B, W-1, G)
    ent_loss = torch.zeros((), device=online.device)
    if alpha is not None:
        online = online + alpha * logp_pi
        if policy.log_ent_coef is not None:
            ent_loss = masked_mean(-policy.log_ent_coef * (logp_pi.detach() + policy.target_entropy), tmask)
    with torch.no_grad():
        advantage = q_buf.mean(2) - q_pi.mean(2)  # (B, W-1, G)
        keep = (advantage > 1e-3).float()
    a_rep = a_buf.unsqueeze(2).expand(*a_buf.shape[:2], len(gammas), *a_buf.shape[2:])  # replay action for each head
    logp = pi.log_prob(a_rep).clamp(-1e3, 1e3)  # (B, W-1, G)
    actor_loss = masked_mean(cfg.online_coeff * online + cfg.offline_coeff * (-keep * logp), tmask)

    # 5. one scalar for one backward pass
    loss = actor_loss + cfg.critic_coeff * critic_loss + ent_loss

    with torch.no_grad():
        q_real = popart.denormalized(q_buf).mean(2)  # (B, W-1, G) in reward-multiplied units
        valid = tmask.float()
        n = valid.sum().clamp_min(1.0)
        stats = {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "filtered_bc_frac": masked_mean(keep, tmask),
            "q_mean": (q_real * valid[..., None]).sum((0, 1)) / n,  # (G,)
            "td_target_mean": (y[:, :, 0] * valid[..., None]).sum((0, 1)) / n,  # (G,)
            "policy_entropy": masked_mean(pi.entropy()[..., policy.main_index], tmask),
            "popart_sigma": popart.sigma.detach().clone(),
            **({"ent_coef": alpha} if alpha is not None else {}),
        }
        for i, e in enumerate(entropies):
            stats[f"attn_entropy_l{i}"] = e.detach()
    return loss, stats
