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
    """forward(x, time[, cond]) -> unet(x, time, class_labels=cond).sample, with exportable
    attention. ``conditional`` says whether the UNet takes ``class_labels`` (class labels or,
    for ``class_embed_type="identity"``, embeddings)."""

    def __init__(self, unet: torch.nn.Module, conditional: bool = False):
        super().__init__()
        self.unet = unet
        self.conditional = conditional
        use_plain_attention(unet)

    def forward(self, x, time, cond=None):
        if self.conditional:
            return self.unet(x, time, class_labels=cond, return_dict=False)[0]
        return self.unet(x, time, return_dict=False)[0]


def _index(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def diffusers_conditioning(unet, num_classes: int | None = None, null_label: int | None = None,
                           embedding_null=None) -> dict:
    """The conditioning keywords of the :class:`ModelSpec` for a ``UNet2DModel``.

    * ``class_embed_type=None`` with ``num_class_embeds = E``: class labels into an ``nn.Embedding``
      of E rows. ``num_classes`` defaults to E; a model trained with label dropout whose null class
      is the last row is ``num_classes = E - 1, null_label = E - 1``. Every label and the null
      label must index the table.
    * ``class_embed_type="timestep"``: labels through the sinusoidal time projection; the table
      size is not in the config, so ``num_classes`` is required.
    * ``class_embed_type="identity"``: the ``class_labels`` are float embeddings added to the time
      embedding, shape ``[time_embed_dim]``; ``embedding_null`` is their optional null value.
    * no class embedding: unconditional; conditioning arguments are an error.
    """
    cfg = unet.config
    cet = cfg.get("class_embed_type")
    if getattr(unet, "class_embedding", None) is None:
        if num_classes is not None or null_label is not None or embedding_null is not None:
            raise MetadataError("this UNet2DModel has no class embedding (class_embed_type and "
                                "num_class_embeds unset): it is unconditional, so num_classes, "
                                "null_label and embedding_null do not apply")
        return {}
    if cet == "identity":
        if num_classes is not None or null_label is not None:
            raise MetadataError("class_embed_type 'identity' takes float embeddings (added to the "
                                "time embedding), not class labels: give embedding_null, not "
                                "num_classes/null_label")
        dim = int(unet.time_embedding.linear_2.out_features)
        return {"embedding_shape": (dim,), "embedding_null": embedding_null}
    if embedding_null is not None:
        raise MetadataError(f"class_embed_type {cet!r} takes class labels, not embeddings: "
                            "embedding_null does not apply")
    if cet is None:
        table = int(cfg.get("num_class_embeds"))
        k = table if num_classes is None else num_classes
        if not _index(k) or not 1 <= k <= table:
            raise MetadataError(f"num_classes must be in 1..{table} (num_class_embeds = {table}: "
                                f"the label table has {table} rows), got {num_classes!r}")
        if null_label is not None and not (_index(null_label) and 0 <= null_label < table):
            raise MetadataError(f"null_label must index the label table (0..{table - 1}; "
                                f"num_class_embeds = {table}), got {null_label!r}")
        return {"num_classes": k, "null_label": null_label}
    if cet == "timestep":
        if num_classes is None:
            raise MetadataError("class_embed_type 'timestep' embeds labels with the sinusoidal "
                                "time projection and has no label table in its config: give "
                                "num_classes (and null_label if it was trained with one)")
        return {"num_classes": num_classes, "null_label": null_label}
    raise MetadataError(f"class_embed_type {cet!r} is not supported (UNet2DModel knows None with "
                        "num_class_embeds, 'timestep' and 'identity')")


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
                          description=None, eps=None, num_classes: int | None = None,
                          null_label: int | None = None, embedding_null=None,
                          **kwargs) -> ExportResult:
    """Export a diffusers ``UNet2DModel`` trained with a DDPM scheduler.

    The ``time`` input receives diffusers timesteps t (N-1) (``itoflow.time_input = index``).
    ``levels`` defaults to 256 (8-bit images); pass None for non-image data. Class-conditional
    UNets get a ``label`` input (or an ``embedding`` input for ``class_embed_type="identity"``),
    passed to the UNet as ``class_labels``; see :func:`diffusers_conditioning` for
    ``num_classes``, ``null_label`` and ``embedding_null``. Further keyword arguments go to
    :func:`export_module`.
    """
    if unet.config.out_channels != unet.config.in_channels:
        raise MetadataError(
            f"UNet2DModel has in_channels={unet.config.in_channels} but out_channels="
            f"{unet.config.out_channels}; learned-variance models (2x channels) are not supported")
    cond = diffusers_conditioning(unet, num_classes, null_label, embedding_null)
    spec = diffusers_spec(unet, scheduler, levels=levels, name=name, description=description,
                          eps=eps, **cond)
    return export_module(DiffusersUNetWrapper(unet, conditional=bool(cond)), path, spec, **kwargs)


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
