"""Adapters for networks with other call conventions: diffusers UNet2DModel and score_sde models."""

from __future__ import annotations

import torch

from .export import ExportResult, export_module
from .metadata import MetadataError, ModelSpec


# --------------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------------

class PlainAttnProcessor:
    """Self-attention with plain matmul/softmax (diffusers' default SDPA has no exportable backward).

    Same maths as diffusers' classic ``AttnProcessor`` for the self-attention blocks of
    ``UNet2DModel``; the linear layers see 2-D inputs, because ``nn.Linear`` on a 3-D input made
    the trace specialise the batch size.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise NotImplementedError(
                "PlainAttnProcessor handles self-attention without a mask only (UNet2DModel); "
                "cross-attention / masked models are not supported by this exporter")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        four_d = hidden_states.ndim == 4
        if four_d:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.reshape(b, c, h * w)          # [B, C, S]
        else:
            hidden_states = hidden_states.transpose(1, 2)               # [B, C, S]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states)
        B, C, S = hidden_states.shape
        flat = hidden_states.transpose(1, 2).reshape(B * S, C)
        q, k, v = attn.to_q(flat), attn.to_k(flat), attn.to_v(flat)
        D = q.shape[-1]
        H = attn.heads
        dh = D // H

        def heads(z):
            return z.reshape(B, S, H, dh).permute(0, 2, 1, 3)          # [B, H, S, dh]

        q, k, v = heads(q), heads(k), heads(v)
        if attn.upcast_attention:
            q, k = q.float(), k.float()
        scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scale
        probs = torch.softmax(scores.float() if attn.upcast_softmax else scores, dim=-1).to(v.dtype)
        out = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(B * S, D)
        out = attn.to_out[1](attn.to_out[0](out))
        out = out.reshape(B, S, out.shape[-1])
        if four_d:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def use_plain_attention(model: torch.nn.Module) -> int:
    """Swap every diffusers ``Attention`` processor for :class:`PlainAttnProcessor`; returns count."""
    n = 0
    for m in model.modules():
        if hasattr(m, "set_processor") and hasattr(m, "to_q") and hasattr(m, "heads"):
            m.set_processor(PlainAttnProcessor())
            n += 1
    return n


class DiffusersUNetWrapper(torch.nn.Module):
    """forward(x, time) -> unet(x, time).sample, with exportable attention."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        cfg = getattr(unet, "config", {})
        if cfg.get("class_embed_type") is not None or cfg.get("num_class_embeds") is not None:
            raise MetadataError(
                "class-conditional UNet2DModel (class_embed_type/num_class_embeds set) needs class "
                "labels, which the itoflow contract has no input for; export an unconditional model")
        self.unet = unet
        use_plain_attention(unet)

    def forward(self, x, time):
        return self.unet(x, time, return_dict=False)[0]


def _get(cfg, key, default=None):
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def diffusers_schedule(scheduler) -> tuple[str, dict, str]:
    """(sde, sde_params, prediction) for a diffusers DDPM-style scheduler (object or config dict).

    ``linear`` betas = linspace(beta_start, beta_end, N) are the VP SDE with beta_min = N beta_start,
    beta_max = N beta_end; ``squaredcos_cap_v2`` is the cosine schedule (s = 0.008).
    """
    cfg = getattr(scheduler, "config", scheduler)
    N = int(_get(cfg, "num_train_timesteps", 1000))
    schedule = _get(cfg, "beta_schedule", "linear")
    if _get(cfg, "trained_betas") is not None:
        raise MetadataError("schedulers with trained_betas have no closed-form SDE in the itoflow "
                            "contract; only 'linear' and 'squaredcos_cap_v2' are supported")
    if schedule == "linear":
        sde = "vp"
        params = {"beta_min": N * float(_get(cfg, "beta_start", 0.0001)),
                  "beta_max": N * float(_get(cfg, "beta_end", 0.02)), "N": N, "T": 1.0}
    elif schedule == "squaredcos_cap_v2":
        sde = "cosine"
        params = {"s": 0.008, "N": N, "T": 1.0}
    else:
        raise MetadataError(
            f"diffusers beta_schedule {schedule!r} has no counterpart in the itoflow contract: "
            "supported are 'linear' (-> sde 'vp') and 'squaredcos_cap_v2' (-> sde 'cosine'). "
            "('scaled_linear' is linear in sqrt(beta), not in beta.)")
    ptype = _get(cfg, "prediction_type", "epsilon")
    prediction = {"epsilon": "epsilon", "sample": "x0", "v_prediction": "v"}.get(ptype)
    if prediction is None:
        raise MetadataError(f"unknown diffusers prediction_type {ptype!r}: expected 'epsilon', "
                            "'sample' or 'v_prediction'")
    return sde, params, prediction


def diffusers_spec(unet, scheduler, **extra) -> ModelSpec:
    sde, params, prediction = diffusers_schedule(scheduler)
    cfg = unet.config
    size = cfg.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    extra.setdefault("data_range", (-1.0, 1.0))
    return ModelSpec(sde=sde, sde_params=params, prediction=prediction, time_input="index",
                     data_shape=(int(cfg.in_channels), int(h), int(w)), **extra)


def export_diffusers_unet(unet, scheduler, path, *, levels: int | None = 256, name=None,
                          description=None, eps=None, **kwargs) -> ExportResult:
    """Export a diffusers ``UNet2DModel`` trained with a DDPM scheduler.

    The ``time`` input receives diffusers timesteps t (N-1) (``itoflow.time_input = index``).
    ``levels`` defaults to 256 (8-bit images); pass None for non-image data. Further keyword
    arguments go to :func:`export_module`.
    """
    if unet.config.out_channels != unet.config.in_channels:
        raise MetadataError(
            f"UNet2DModel has in_channels={unet.config.in_channels} but out_channels="
            f"{unet.config.out_channels}; learned-variance models (2x channels) are not supported")
    spec = diffusers_spec(unet, scheduler, levels=levels, name=name, description=description,
                          eps=eps)
    return export_module(DiffusersUNetWrapper(unet), path, spec, **kwargs)


# --------------------------------------------------------------------------------------------
# score_sde (NCSN++ / DDPM++ / DDPM, called as model(x, labels))
# --------------------------------------------------------------------------------------------

SCORE_SDE_KINDS = {
    # kind: (sde, time_input, prediction, labels from the exported `time` input)
    "vp_discrete": ("vp", "index", "epsilon"),      # labels = t (N-1), std = sqrt(1 - abar_i)
    "vp_continuous": ("vp", "t", "epsilon"),        # labels = 999 t, std = sigma(t)
    "subvp_continuous": ("subvp", "t", "epsilon"),  # labels = 999 t
    "ve_continuous": ("ve", "sigma", "score"),      # labels = sigma(t); NCSN++ scales by 1/sigma
}


class ScoreSdeWrapper(torch.nn.Module):
    """forward(x, time) -> model(x, labels) with score_sde's label convention for ``kind``."""

    def __init__(self, model: torch.nn.Module, kind: str):
        super().__init__()
        if kind not in SCORE_SDE_KINDS:
            raise MetadataError(
                f"unknown score_sde kind {kind!r}: expected one of {', '.join(SCORE_SDE_KINDS)}. "
                "(Discrete VE/SMLD models take integer labels round((T-t)(N-1)) into a reversed "
                "sigma table, which the contract has no time convention for.)")
        self.model = model
        self.kind = kind

    def forward(self, x, time):
        if self.kind in ("vp_continuous", "subvp_continuous"):
            labels = time * 999.0
        else:
            labels = time
        return self.model(x, labels)


def score_sde_spec(kind: str, data_shape, sde_params=None, centered: bool = True,
                   prediction: str | None = None, **extra) -> ModelSpec:
    if kind not in SCORE_SDE_KINDS:
        ScoreSdeWrapper(torch.nn.Identity(), kind)  # raises the explanatory error
    sde, time_input, default_prediction = SCORE_SDE_KINDS[kind]
    extra.setdefault("data_range", (-1.0, 1.0) if centered else (0.0, 1.0))
    return ModelSpec(sde=sde, sde_params=sde_params or {}, time_input=time_input,
                     prediction=prediction or default_prediction, data_shape=tuple(data_shape),
                     **extra)


def export_score_sde(model, path, kind: str, data_shape, *, sde_params=None, centered: bool = True,
                     levels: int | None = 256, prediction: str | None = None, name=None,
                     description=None, eps=None, **kwargs) -> ExportResult:
    """Export a score_sde model called as ``model(x, labels)``.

    ``kind`` picks score_sde's ``get_score_fn`` convention: ``vp_discrete`` (DDPM-trained, labels
    t (N-1)), ``vp_continuous`` / ``subvp_continuous`` (labels 999 t, epsilon output) or
    ``ve_continuous`` (labels sigma(t), the network returns the score). ``centered`` is the
    config's ``data.centered`` (data in [-1, 1] rather than [0, 1]).
    """
    spec = score_sde_spec(kind, data_shape, sde_params=sde_params, centered=centered,
                          levels=levels, prediction=prediction, name=name,
                          description=description, eps=eps)
    return export_module(ScoreSdeWrapper(model, kind), path, spec, **kwargs)
