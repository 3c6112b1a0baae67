"""Unit tests of the agent's networks, distributions, PopArt, exploration and the loss (no env needed)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces

from amago_sb.exploration import EpisodicExploration, QuietCorridorExploration
from amago_sb.losses import masked_mean
from amago_sb.networks import (
    ActionSpec,
    CriticEnsemble,
    GRUTrajEncoder,
    InputNorm,
    PopArt,
    SigmaReparamLinear,
    TimestepEncoder,
    TransformerTrajEncoder,
)
from amago_sb.networks.distributions import ClippedCategorical, TanhGaussian


def _tformer(layers=2, ctx=16):
    torch.manual_seed(0)
    enc = TransformerTrajEncoder(8, d_model=16, n_layers=layers, n_heads=2, d_ff=32, context_len=ctx).eval()
    return enc


def test_kv_cache_step_matches_full_forward():
    enc = _tformer()
    B, L = 3, 10
    x = torch.randn(B, L, 8)
    t = torch.arange(L)[None].expand(B, L)
    with torch.no_grad():
        full, _ = enc(x, t)
        state = enc.init_state(B)
        steps = []
        for i in range(L):
            y, state = enc.step(x[:, i], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_kv_cache_slides_when_full_and_resets_per_env():
    enc = _tformer(layers=1, ctx=4)  # one layer: a full cache equals attending to the last 4 tokens exactly
    B, L = 2, 9
    x = torch.randn(B, L, 8)
    with torch.no_grad():
        state = enc.init_state(B)
        for i in range(L):
            y, state = enc.step(x[:, i], state)
        window = x[:, L - 4:]
        ref, _ = enc(window, torch.arange(L - 4, L)[None].expand(B, 4))
        torch.testing.assert_close(y, ref[:, -1], atol=1e-5, rtol=1e-4)
        # reset env 0 only: its next step sees a fresh context at time 0, env 1 keeps going
        state.reset(torch.tensor([True, False]))
        y2, state = enc.step(x[:, 0], state)
        fresh, _ = enc(x[:1, :1], torch.zeros(1, 1, dtype=torch.long))
        torch.testing.assert_close(y2[0], fresh[0, 0], atol=1e-5, rtol=1e-4)
        assert state.count.tolist() == [1, L + 1]


def test_kv_cache_keeps_slots_past_lengths_zero_so_decoding_need_not_mask_them():
    """A reset zeroes the envs it empties (a NaN from an old episode cannot reach the new one); with that invariant the
    acting path decodes with zero_stale=False, and its output equals the masking decode's."""
    from amago_sb.kernels import decode_attention

    enc = _tformer(layers=1, ctx=8)
    with torch.no_grad():
        state = enc.init_state(2)
        for _ in range(5):
            _, state = enc.step(torch.randn(2, 8), state)
        state.k[0][0, :, 2] = float("nan")  # poison env 0's old episode
        state.reset(torch.tensor([True, False]))
        assert all(torch.all(c[0] == 0) for c in (*state.k, *state.v)) and torch.any(state.k[0][1] != 0)
        _, state = enc.step(torch.randn(2, 8), state)
        lengths = state.count.clamp(max=state.capacity)
        q = torch.randn(2, state.k[0].shape[1], state.k[0].shape[3])
        fast = decode_attention(q, state.k[0], state.v[0], lengths, zero_stale=False)
        assert torch.isfinite(fast).all()
        torch.testing.assert_close(fast, decode_attention(q, state.k[0], state.v[0], lengths))


def test_transformer_padding_does_not_change_valid_rows_and_entropy_is_reported():
    enc = _tformer()
    x = torch.randn(2, 6, 8)
    t = torch.arange(6)[None].expand(2, 6)
    with torch.no_grad():
        a, ents = enc(x, t, torch.tensor([6, 4]), want_entropy=True)
        b, _ = enc(x[1:, :4], t[1:, :4])
    torch.testing.assert_close(a[1, :4], b[0], atol=1e-5, rtol=1e-4)
    assert len(ents) == 2 and all(0 < float(e) < np.log(6) + 1e-4 for e in ents)


def test_gru_step_matches_forward():
    torch.manual_seed(0)
    enc = GRUTrajEncoder(8, d_model=16, n_layers=2)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        full, _ = enc(x, None)
        st = enc.init_state(2)
        outs = []
        for i in range(5):
            y, st = enc.step(x[:, i], st)
            outs.append(y)
    torch.testing.assert_close(torch.stack(outs, 1), full, atol=1e-5, rtol=1e-4)


def test_sigma_reparam_estimates_spectral_norm_and_eval_cache_follows_updates():
    torch.manual_seed(0)
    lin = SigmaReparamLinear(12, 7)
    true = torch.linalg.matrix_norm(lin.weight.detach(), ord=2)
    sigma = torch.einsum("o,oi,i->", lin.u, lin.weight.detach(), lin.v)
    assert abs(float(sigma) - float(true)) / float(true) < 1e-3
    lin.eval()
    x = torch.randn(3, 12)
    with torch.no_grad():
        y1 = lin(x)
        lin.gamma.mul_(2.0)
        y2 = lin(x)
    torch.testing.assert_close(y2 - lin.bias, 2 * (y1 - lin.bias))


def test_input_norm_ignores_padding_and_only_updates_in_train_mode():
    norm = InputNorm(2, beta=0.5)
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [100.0, 100.0]])
    norm.train()
    norm(x, mask=torch.tensor([True, True, False]))
    torch.testing.assert_close(norm.mu, torch.tensor([1.0, 2.0]))
    norm.eval()
    norm(torch.full((4, 2), 50.0))
    torch.testing.assert_close(norm.mu, torch.tensor([1.0, 2.0]))


def test_popart_update_preserves_denormalized_outputs():
    pop = PopArt(3, beta=0.3)
    q = torch.randn(5, 3)
    before = pop.denormalized(q)
    pop.update_stats(torch.randn(10, 3) * 7 + 3, torch.ones(10, 1, dtype=torch.bool))
    torch.testing.assert_close(pop.denormalized(q), before, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(pop.mu, torch.zeros(3))


def test_popart_first_update_blends_with_the_initial_statistics():
    pop = PopArt(1, beta=5e-4, init_nu=100.0)
    pop.update_stats(torch.full((8, 1), 10.0), torch.ones(8, 1, dtype=torch.bool))
    # beta_t = beta / (1 - (1 - beta)^2) ~ 1/2: halfway from (mu 0, nu 100) to the batch's (10, 100), not replaced
    torch.testing.assert_close(pop.mu, torch.tensor([5.0]), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(pop.nu, torch.tensor([100.0]), rtol=1e-3, atol=1e-3)


def test_action_spec_is_one_class_per_kind():
    from amago_sb.networks.distributions import BoxActions, DiscreteActions, MultiDiscreteActions

    assert type(ActionSpec(spaces.Discrete(3))) is DiscreteActions and ActionSpec(spaces.Discrete(3)).discrete
    assert type(ActionSpec(spaces.MultiDiscrete([2, 3]))) is MultiDiscreteActions
    assert type(ActionSpec(spaces.Box(-1, 1, (2,)))) is BoxActions
    with pytest.raises(ValueError, match="MultiBinary"):
        ActionSpec(spaces.MultiBinary(3))
    md = ActionSpec(spaces.MultiDiscrete([2, 3]))
    assert md.critic_input(torch.tensor([[1, 2]])).tolist() == [[0.0, 1.0, 0.0, 0.0, 1.0]]


def test_box_actions_are_clamped_at_the_critic_input():
    spec = ActionSpec(spaces.Box(-1, 1, (3,)))
    a = torch.tensor([1.0, -1.0, 0.5], requires_grad=True)
    out = spec.critic_input(a)
    assert out.tolist() == pytest.approx([0.999, -0.999, 0.5])
    out.sum().backward()
    assert a.grad.tolist() == [0.0, 0.0, 1.0]  # no -Q gradient pushes an action further past the border


def test_box_critic_is_as_sensitive_to_the_action_as_to_the_state_at_init():
    torch.manual_seed(0)
    D = 64
    critic = CriticEnsemble(D, ActionSpec(spaces.Box(-1, 1, (1,))), torch.tensor([0.99]), n_critics=4, d_hidden=64)
    s = F.layer_norm(torch.randn(256, D), (D,))  # encoder features are layer-normed: unit variance per dim
    a = torch.rand(256, 1, 1) * 2 - 1
    with torch.no_grad():
        by_action = critic(s[:1].expand(256, D), a).std(0).mean()  # one state, many actions
        by_state = critic(s, a[:1].expand(256, 1, 1)).std(0).mean()  # one action, many states
    assert 0.4 < float(by_action / by_state) < 2.5  # unscaled, the single action input gives about 0.06


def test_clipped_categorical_keeps_log_probs_finite():
    d = ClippedCategorical(torch.tensor([[50.0, -50.0, -50.0]]))
    assert float(d.probs.min()) >= 1e-3 * 0.9
    assert torch.isfinite(d.log_prob(torch.tensor([2]))).all()
    assert d.mode().item() == 0


def test_clipped_categorical_gradients_survive_the_clip():
    """A saturated policy (p(a) << 0.001) still gets a full behaviour-cloning gradient towards a good replay action,
    and the Q-weighted probabilities still move: a plain clamp would give zero for both."""
    logits = torch.tensor([[30.0, -30.0, -30.0]], requires_grad=True)
    d = ClippedCategorical(logits)
    (-d.log_prob(torch.tensor([1]))).sum().backward()
    np.testing.assert_allclose(logits.grad.numpy(), [[1.0, -1.0, 0.0]], atol=1e-6)  # softmax - one_hot
    assert d.log_prob(torch.tensor([1])).item() == pytest.approx(np.log(1e-3 / (0.99 + 2e-3)), rel=1e-5)  # clipped value
    logits = torch.tensor([[8.0, 0.0, 0.0]], requires_grad=True)
    q = torch.tensor([[0.0, 10.0, 0.0]])
    (-(ClippedCategorical(logits).probs * q).sum()).backward()
    assert logits.grad[0, 1] < 0 and logits.grad[0, 0] > 0  # descent raises p(1), lowers p(0)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    torch.manual_seed(0)
    params = torch.tensor([[0.3, -0.2]])  # mu, raw log std for one action dim
    d = TanhGaussian(params)
    a = torch.tensor([[0.4]])
    u = torch.atanh(a)
    ref = torch.distributions.Normal(d.mu, d.std).log_prob(u).sum(-1) - torch.log(1 - a**2).sum(-1)
    torch.testing.assert_close(d.log_prob(a), ref, atol=1e-4, rtol=1e-4)
    s = d.rsample()
    assert s.abs().max() < 1


def test_tanh_gaussian_rsample_log_prob_is_the_density_of_the_sample_and_stays_finite_at_the_border():
    torch.manual_seed(0)
    d = TanhGaussian(torch.tensor([[0.2, -1.0], [0.0, 3.0], [6.0, 3.0]]))  # mild; wide; saturated at +1
    a, logp = d.rsample_with_log_prob()
    assert a.shape == (3, 1) and logp.shape == (3,)
    inside = a.abs().squeeze(-1) < 0.99
    torch.testing.assert_close(logp[inside], d.log_prob(a)[inside], atol=1e-3, rtol=1e-3)
    assert torch.isfinite(logp).all()  # atanh of a saturated sample is inf; the pre-tanh formula is not


def test_critic_param_detach_blocks_gradients_to_critics_only():
    spec = ActionSpec(spaces.Box(-1, 1, (2,)))
    critic = CriticEnsemble(4, spec, torch.tensor([0.9, 0.99]), n_critics=3, d_hidden=8)
    s = torch.randn(5, 4)
    a = torch.randn(5, 2, 2, requires_grad=True)
    q = critic(s, a, detach_params=True)
    assert q.shape == (5, 3, 2)
    q.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())


def test_box_critic_factored_first_layer_equals_the_concatenated_input_layer():
    """The Box critic's first layer runs as ``W_s s + W_ag [a; g]`` (the state part once per timestep): it must give
    the outputs and gradients of one ``Linear`` on the concatenated ``[s, a * scale, gamma_feat]``, the layer whose
    parameters it stores."""
    torch.manual_seed(0)
    spec = ActionSpec(spaces.Box(-1, 1, (2,)))
    gammas = torch.tensor([0.9, 0.99, 0.999])
    critic = CriticEnsemble(5, spec, gammas, n_critics=3, d_hidden=8)
    s = torch.randn(2, 4, 5, requires_grad=True)
    a = torch.rand(2, 4, 3, 2, requires_grad=True)

    def concatenated() -> torch.Tensor:
        x = torch.cat([s.unsqueeze(-2).expand(2, 4, 3, 5), a * critic.action_scale, critic.gamma_feat.expand(2, 4, 3, 1)],
                      dim=-1).reshape(-1, 8)
        h = F.leaky_relu(critic.l1.shared(x))
        h = F.leaky_relu(critic.l2(h))
        return critic.l3(h).reshape(3, 2, 4, 3).movedim(0, -2)  # (B, L, C, G)

    weights = torch.randn(2, 4, 3, 3)
    grads = []
    for fn in (concatenated, lambda: critic(s, a)):
        out = fn()
        grads.append([out, *torch.autograd.grad((out * weights).sum(), [s, a, *critic.parameters()])])
    for ref, got in zip(*grads):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_masked_mean_ignores_masked_rows():
    x = torch.tensor([[1.0, 100.0], [3.0, 100.0]])[..., None].expand(2, 2, 3)
    m = torch.tensor([[True, False], [True, False]])
    assert float(masked_mean(x, m)) == pytest.approx(2.0)


def test_timestep_encoder_handles_discrete_image_and_instruction_keys():
    space = spaces.Dict({
        "obs": spaces.Dict({"pos": spaces.Discrete(5), "img": spaces.Box(0, 255, (3, 8, 8), np.uint8)}),
        "prev_action": spaces.Box(0, 1, (3,)), "prev_reward": spaces.Box(-1, 1, (1,)),
        "time": spaces.Box(0, 1, (1,)), "reset": spaces.Box(0, 1, (1,)),
        "instruction": spaces.MultiDiscrete(np.full((2, 3), 9)),
    })
    enc = TimestepEncoder(space, out_dim=16)
    B, L = 2, 4
    obs = {"obs/pos": torch.randint(0, 5, (B, L)), "obs/img": torch.randint(0, 255, (B, L, 3, 8, 8), dtype=torch.uint8),
           "prev_action": torch.rand(B, L, 3), "prev_reward": torch.rand(B, L, 1), "time": torch.rand(B, L, 1),
           "reset": torch.zeros(B, L, 1), "instruction": torch.randint(0, 9, (B, L, 2, 3))}
    assert enc(obs).shape == (B, L, 16)
    one = {k: v[:, 0] for k, v in obs.items()}
    assert enc(one).shape == (B, 16)


def test_timestep_encoder_rejects_unsupported_space():
    space = spaces.Dict({"obs": spaces.Text(5), "prev_action": spaces.Box(0, 1, (1,)), "prev_reward": spaces.Box(0, 1, (1,)),
                         "time": spaces.Box(0, 1, (1,)), "reset": spaces.Box(0, 1, (1,))})
    with pytest.raises(ValueError, match="unsupported space"):
        TimestepEncoder(space)


def test_exploration_anneals_and_respects_bounds():
    spec = ActionSpec(spaces.Discrete(3))
    ex = EpisodicExploration(spec, 4, eps_start=1.0, eps_end=0.0, anneal_steps=100, seed=0)
    assert ex.level(0) == 1.0 and ex.level(50) == pytest.approx(0.5) and ex.level(1000) == 0.0
    a = np.zeros(4, dtype=np.int64)
    assert (ex(a, 1000) == 0).all()  # no noise once annealed to 0
    ex.multiplier[:] = 1.0
    outs = np.stack([ex(a, 0) for _ in range(200)])
    assert set(np.unique(outs)) == {0, 1, 2}
    box = EpisodicExploration(ActionSpec(spaces.Box(-2, 2, (2,))), 2, seed=0)
    assert np.abs(box(np.full((2, 2), 0.99, np.float32), 0)).max() <= 1.0
    with pytest.raises(ValueError, match="exploration levels"):
        EpisodicExploration(spec, 1, eps_start=2.0)


def test_exploration_is_bilevel_over_training_and_within_episodes():
    ex = EpisodicExploration(ActionSpec(spaces.Discrete(3)), 2, eps_start=1.0, eps_end=0.05, anneal_steps=100,
                             horizon=10, seed=0)
    ex.multiplier[:] = 1.0

    def episode(num_timesteps):
        ex.new_episodes(np.ones(2, bool))
        ex.multiplier[:] = 1.0
        levels = []
        for _ in range(12):
            levels.append(ex.epsilon(num_timesteps)[0])
            ex(np.zeros(2, np.int64), num_timesteps)
        return np.array(levels)

    early, late = episode(0), episode(100)
    np.testing.assert_allclose(early[:11], np.linspace(1.0, 0.05, 11))  # start -> end of the episode
    np.testing.assert_allclose(early[11], 0.05)  # past the horizon: the end level
    np.testing.assert_allclose(late[:11], np.linspace(0.05, 0.01, 11))  # annealed: 0.05 -> 0.01 as the original
    np.testing.assert_allclose(episode(50)[0], 0.525)  # halfway through training
    with pytest.raises(ValueError, match="horizon must be an int >= 1"):
        EpisodicExploration(ActionSpec(spaces.Discrete(3)), 1, horizon=0)


def test_amago_exploration_follows_the_episode_length_and_the_budget():
    from amago_sb import AMAGO

    model = AMAGO("FF", "popgym-RepeatPreviousEasy-v0", n_envs=2, learning_starts=10_000, policy_kwargs=dict(d_model=16))
    assert model.exploration.horizon == model.env.get_attr("max_episode_steps")[0]
    model.learn(320)
    assert model.exploration.anneal_steps == 320  # exploration_steps=None: the learn() budget
    model.learn(320, reset_num_timesteps=False)
    assert model.exploration.anneal_steps == 640
    fixed = AMAGO("FF", "popgym-RepeatPreviousEasy-v0", n_envs=2, exploration_steps=1000, learning_starts=10_000,
                  policy_kwargs=dict(d_model=16))
    fixed.learn(64)
    assert fixed.exploration.anneal_steps == 1000
    with pytest.raises(ValueError, match=r"exploration_steps must be in \[0, inf\] or None"):
        AMAGO("FF", "popgym-RepeatPreviousEasy-v0", exploration_steps=-1)


def test_quiet_corridor_exploration_follows_the_episode_step():
    spec = ActionSpec(spaces.Discrete(4))
    ex = QuietCorridorExploration(spec, 2, horizon=10, start_window=2, end_window=3, eps_start=1.0, eps_end=1.0, seed=0)
    ex.multiplier[:] = 1.0
    levels = []
    for _ in range(10):
        levels.append(ex.epsilon(0)[0])
        ex(np.zeros(2, np.int64), 0)
    np.testing.assert_allclose(levels, [1.0, 1.0] + [0.05] * 5 + [1.0] * 3)  # quiet on steps 2..6 of 0..9
    ex.new_episodes(np.array([True, False]))
    assert ex.episode_step.tolist() == [0, 10] and ex.epsilon(0)[0] == ex.multiplier[0]  # fresh episode: regular
    with pytest.raises(ValueError, match="horizon >= 1"):
        QuietCorridorExploration(spec, 1, horizon=0)


def test_amago_takes_an_exploration_class():
    from amago_sb import AMAGO

    model = AMAGO("FF", "TMazePassive-v0", n_envs=2, exploration_class=QuietCorridorExploration,
                  exploration_kwargs=dict(horizon=11), learning_starts=10_000, policy_kwargs=dict(d_model=16))
    model.learn(64)
    assert isinstance(model.exploration, QuietCorridorExploration) and model.exploration.horizon == 11
    assert (model.exploration.episode_step <= 11).all()  # reset with every episode (11 steps long)
    with pytest.raises(TypeError, match="subclass of amago_sb.exploration.EpisodicExploration"):
        AMAGO("FF", "TMazePassive-v0", exploration_class=dict)


@pytest.mark.parametrize("box", [False, True])
def test_critic_ensemble_members_are_independent_mlps(box):
    torch.manual_seed(0)
    spec = ActionSpec(spaces.Box(-1, 1, (2,)) if box else spaces.Discrete(3))
    gammas = torch.tensor([0.9, 0.99])
    critic = CriticEnsemble(4, spec, gammas, n_critics=3, d_hidden=8)
    s = torch.randn(2, 5, 4)
    a = torch.randn(2, 5, 2, 2) if box else None
    q = critic(s, a)
    for c in range(3):
        def layer(x, lin, c=c):
            return x @ lin.weight[c] + lin.bias[c]
        if box:
            s_g = s.unsqueeze(-2).expand(2, 5, 2, 4)
            x = torch.cat([s_g, a * critic.action_scale, critic.gamma_feat.expand(2, 5, 2, 1)], -1)
        else:
            x = s
        h = torch.nn.functional.leaky_relu(layer(x, critic.l1))
        h = torch.nn.functional.leaky_relu(layer(h, critic.l2))
        ref = layer(h, critic.l3)
        ref = ref[..., 0] if box else ref.reshape(2, 5, 2, 3)
        torch.testing.assert_close(q[:, :, c], ref, atol=1e-5, rtol=1e-4)


def test_instruction_embedding_reads_each_distinct_instruction_once_with_the_same_result():
    """Rows of a batch repeat their instruction; the embedding runs the GRU on the distinct ones only and must give
    every row (and every parameter gradient) what a row-by-row GRU pass gives."""
    from amago_sb.networks.tstep import _InstructionEmbedding

    torch.manual_seed(0)
    emb = _InstructionEmbedding(spaces.MultiDiscrete(np.full((3, 2), 9)))
    base = torch.randint(9, (4, 3, 2))
    tokens = base[torch.tensor([0, 0, 1, 2, 2, 2, 3, 1])]  # (8, 3, 2): 4 distinct instructions
    out = emb(tokens)
    ref = torch.cat([emb.proj(emb.rnn(emb.emb(t.flatten()[None]))[1][0]) for t in tokens])  # row by row
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    w = torch.randn_like(out)
    g_out = torch.autograd.grad((out * w).sum(), list(emb.parameters()))
    g_ref = torch.autograd.grad((ref * w).sum(), list(emb.parameters()))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_multidiscrete_one_hots_are_concatenated_per_position_with_the_space_start():
    from amago_sb.networks.tstep import TimestepEncoder

    space = spaces.Dict({"obs": spaces.MultiDiscrete([3, 5, 2], start=[1, -2, 0]), "reset": spaces.Box(0, 1, (1,))})
    enc = TimestepEncoder(space, out_dim=8)
    ids = torch.tensor([[[1, -2, 0], [3, 2, 1]]])  # (1, 2, 3): lowest and highest id of every position
    vec = enc._vector({"obs": ids, "reset": torch.zeros(1, 2, 1)}, torch.Size([1, 2]))
    expected = torch.cat([torch.zeros(1, 2, 1), F.one_hot(ids[..., 0] - 1, 3), F.one_hot(ids[..., 1] + 2, 5),
                          F.one_hot(ids[..., 2], 2)], dim=-1).float()
    torch.testing.assert_close(vec, expected)
