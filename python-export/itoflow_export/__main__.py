"""Command line: ``python -m itoflow_export {export-module,export-diffusers,export-score-sde,
export-classifier,inspect,train-digits}``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path


def _factory(spec: str):
    if ":" not in spec:
        raise SystemExit(f"--factory must look like 'package.module:callable', got {spec!r}")
    mod, _, attr = spec.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _load_module(args):
    import torch

    module = _factory(args.factory)()
    if args.checkpoint:
        sd = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and args.state_key:
            sd = sd[args.state_key]
        module.load_state_dict(sd)
    return module.float()


def _json_arg(text, what):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"{what} must be JSON ({e}): {text!r}")


def _common(p):
    p.add_argument("--out", required=True, help="model file to write (NAME.onnx); the derivative "
                   "graph goes beside it as NAME.vjp.onnx")
    p.add_argument("--no-derivative", action="store_true", help="skip the derivative graph")
    p.add_argument("--jvp", action="store_true", help="derivative graph also returns jvp = J v")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--tol", type=float, default=None, help="relative verification tolerance "
                   "(default 1e-4: max|onnx - torch| <= tol * max(1, max|torch|))")
    p.add_argument("--levels", type=int, default=None, help="itoflow.data.levels")
    p.add_argument("--range", dest="data_range", default=None, help="itoflow.data.range, JSON [lo, hi]")
    p.add_argument("--eps", type=float, default=None, help="itoflow.eps")
    p.add_argument("--name", default=None)
    p.add_argument("--description", default=None)
    p.add_argument("--report", default=None, help="write the export/verification report as JSON")


def _conditioning(p, embedding_shape=True):
    g = p.add_argument_group("conditioning (docs/onnx-format.md, format version 2)")
    g.add_argument("--num-classes", type=int, default=None, help="class-conditional: the network "
                   "takes an int64 label [batch] with classes 0..K-1 (itoflow.cond.num_classes)")
    g.add_argument("--null-label", type=int, default=None, help="the label that means "
                   "'unconditional' (trained with label dropout; conventionally K)")
    if embedding_shape:
        g.add_argument("--embedding-shape", default=None, help="embedding-conditional: the network "
                       "takes a float32 embedding [batch, *shape]; JSON per-sample shape, e.g. [512]")
    g.add_argument("--embedding-null", default=None, help="the null embedding: a JSON number (every "
                   "entry) or a JSON list of the flattened per-sample values")


def _conditioning_kwargs(args) -> dict:
    out = {"num_classes": args.num_classes, "null_label": args.null_label,
           "embedding_null": _json_arg(args.embedding_null, "--embedding-null")}
    if hasattr(args, "embedding_shape"):
        shape = _json_arg(args.embedding_shape, "--embedding-shape")
        out["embedding_shape"] = None if shape is None else tuple(shape)
    return out


def _export_kwargs(args):
    from .verify import DEFAULT_TOL

    return {"derivative": not args.no_derivative, "jvp": args.jvp,
            "verify_graphs": not args.no_verify, "tol": args.tol or DEFAULT_TOL,
            "log": lambda m: print(f"[itoflow-export] {m}", file=sys.stderr)}


def _finish(args, result):
    from .export import write_report

    print(result.summary())
    if args.report:
        write_report(result, args.report)


def cmd_export_module(args):
    from .export import export_module
    from .metadata import ModelSpec

    spec = ModelSpec(sde=args.sde, sde_params=_json_arg(args.sde_params, "--sde-params") or {},
                     prediction=args.prediction, time_input=args.time_input,
                     data_shape=tuple(_json_arg(args.data_shape, "--data-shape")),
                     data_range=_json_arg(args.data_range, "--range"), levels=args.levels,
                     eps=args.eps, name=args.name, description=args.description,
                     **_conditioning_kwargs(args))
    _finish(args, export_module(_load_module(args), args.out, spec, **_export_kwargs(args)))


def cmd_export_diffusers(args):
    from diffusers import DDPMScheduler, UNet2DModel

    from .adapters import export_diffusers_unet

    root = Path(args.pretrained)
    unet_dir = root / "unet" if (root / "unet").is_dir() else root
    sched_dir = Path(args.scheduler) if args.scheduler else (
        root / "scheduler" if (root / "scheduler").is_dir() else root)
    unet = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True).float()
    scheduler = DDPMScheduler.from_pretrained(str(sched_dir), local_files_only=True)
    levels = 256 if args.levels is None else (None if args.levels == 0 else args.levels)
    result = export_diffusers_unet(unet, scheduler, args.out, levels=levels, name=args.name,
                                   description=args.description, eps=args.eps,
                                   **_conditioning_kwargs(args), **_export_kwargs(args))
    _finish(args, result)


def cmd_export_score_sde(args):
    from .adapters import export_score_sde

    levels = 256 if args.levels is None else (None if args.levels == 0 else args.levels)
    result = export_score_sde(_load_module(args), args.out, args.kind,
                              tuple(_json_arg(args.data_shape, "--data-shape")),
                              sde_params=_json_arg(args.sde_params, "--sde-params"),
                              centered=not args.uncentered, levels=levels,
                              prediction=args.prediction, name=args.name,
                              description=args.description, eps=args.eps, **_export_kwargs(args))
    _finish(args, result)


def cmd_export_classifier(args):
    from .export import export_classifier
    from .metadata import ClassifierSpec
    from .verify import DEFAULT_TOL

    noisy = args.kind == "classifier"
    if noisy and (args.sde is None or args.time_input is None):
        raise SystemExit("--sde and --time-input are required for a noise-conditional classifier "
                         "(--kind classifier)")
    spec = ClassifierSpec(num_classes=args.num_classes,
                          data_shape=tuple(_json_arg(args.data_shape, "--data-shape")),
                          kind=args.kind, sde=args.sde, time_input=args.time_input,
                          sde_params=_json_arg(args.sde_params, "--sde-params") or {},
                          data_range=_json_arg(args.data_range, "--range"), eps=args.eps,
                          name=args.name, description=args.description)
    result = export_classifier(
        _load_module(args), args.out, spec, verify_graphs=not args.no_verify,
        tol=args.tol or DEFAULT_TOL, log=lambda m: print(f"[itoflow-export] {m}", file=sys.stderr))
    _finish(args, result)


def cmd_inspect(args):
    import onnx

    from . import checks
    from .metadata import read_metadata

    model = onnx.load(args.file, load_external_data=False)
    md = read_metadata(model)
    print(f"{args.file}: opset {[ (o.domain or 'ai.onnx', o.version) for o in model.opset_import]}")
    for which in ("input", "output"):
        types = checks.io_types(model, which)
        for name, dims in checks.io_shapes(model, which).items():
            print(f"  {which:6s} {name}: {types[name]} {dims}")
    for k, v in sorted(md.items()):
        print(f"  {k} = {v}")
    bad = checks.reducing_scatters(model)
    print(f"  reducing scatters: {bad if bad else 'none'}")
    if not md:
        print("  (no itoflow.* metadata)")
    sys.exit(0 if (not bad or args.allow_scatter) else 1)


def cmd_train_digits(args):
    from .digits_pipeline import run

    run(Path(args.out), steps=args.steps, seed=args.seed, threads=args.threads,
        skip_train=args.skip_train, n_likelihood=args.n_likelihood,
        skip_guidance=args.skip_guidance)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m itoflow_export",
                                description="Export score networks to ONNX for itoflow.")
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("export-module", help="export a torch.nn.Module with forward(x, time), "
                       "forward(x, time, label) or forward(x, time, embedding)")
    m.add_argument("--factory", required=True, help="package.module:callable returning the module")
    m.add_argument("--checkpoint", help="state_dict to load (torch.load)")
    m.add_argument("--state-key", help="key of the state_dict inside the checkpoint dict")
    m.add_argument("--sde", required=True, choices=["vp", "subvp", "ve", "cosine", "edm"])
    m.add_argument("--sde-params", help='JSON, e.g. \'{"beta_min": 0.1, "beta_max": 20}\'')
    m.add_argument("--prediction", required=True,
                   choices=["score", "epsilon", "x0", "v", "edm_denoiser"])
    m.add_argument("--time-input", required=True, choices=["t", "index", "sigma", "edm_c_noise"])
    m.add_argument("--data-shape", required=True, help="JSON per-sample shape, e.g. [1, 8, 8]")
    _conditioning(m)
    _common(m)
    m.set_defaults(fn=cmd_export_module)

    d = sub.add_parser("export-diffusers", help="export a local diffusers UNet2DModel + DDPM scheduler")
    d.add_argument("--pretrained", required=True, help="local pipeline folder (with unet/ and "
                   "scheduler/) or a UNet2DModel folder")
    d.add_argument("--scheduler", help="scheduler folder, if not inside --pretrained")
    _conditioning(d, embedding_shape=False)
    _common(d)
    d.set_defaults(fn=cmd_export_diffusers)

    s = sub.add_parser("export-score-sde", help="export a score_sde model called as model(x, labels)")
    s.add_argument("--factory", required=True)
    s.add_argument("--checkpoint")
    s.add_argument("--state-key")
    s.add_argument("--kind", required=True,
                   choices=["vp_discrete", "vp_continuous", "subvp_continuous", "ve_continuous"])
    s.add_argument("--data-shape", required=True)
    s.add_argument("--sde-params")
    s.add_argument("--uncentered", action="store_true", help="data in [0, 1] (config.data.centered=False)")
    s.add_argument("--prediction", default=None, help="override the kind's default prediction")
    _common(s)
    s.set_defaults(fn=cmd_export_score_sde)

    c = sub.add_parser("export-classifier", help="export a classifier: noise-conditional "
                       "(x, time) -> logits for classifier guidance (the file also returns "
                       "grad = d/dx log softmax[label]), or a clean classifier-eval x -> logits")
    c.add_argument("--factory", required=True, help="package.module:callable returning the module")
    c.add_argument("--checkpoint", help="state_dict to load (torch.load)")
    c.add_argument("--state-key", help="key of the state_dict inside the checkpoint dict")
    c.add_argument("--kind", default="classifier", choices=["classifier", "classifier-eval"])
    c.add_argument("--num-classes", type=int, required=True)
    c.add_argument("--data-shape", required=True, help="JSON per-sample shape, e.g. [1, 8, 8]")
    c.add_argument("--sde", choices=["vp", "subvp", "ve", "cosine", "edm"],
                   help="the SDE of the noised inputs (noise-conditional classifiers)")
    c.add_argument("--sde-params", help='JSON, e.g. \'{"beta_min": 0.1, "beta_max": 20}\'')
    c.add_argument("--time-input", choices=["t", "index", "sigma", "edm_c_noise"])
    c.add_argument("--out", required=True, help="classifier file to write (NAME.onnx)")
    c.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    c.add_argument("--tol", type=float, default=None, help="relative verification tolerance")
    c.add_argument("--range", dest="data_range", default=None, help="itoflow.data.range, JSON [lo, hi]")
    c.add_argument("--eps", type=float, default=None, help="itoflow.eps")
    c.add_argument("--name", default=None)
    c.add_argument("--description", default=None)
    c.add_argument("--report", default=None, help="write the export/verification report as JSON")
    c.set_defaults(fn=cmd_export_classifier)

    i = sub.add_parser("inspect", help="print an ONNX file's inputs, outputs and itoflow metadata")
    i.add_argument("file")
    i.add_argument("--allow-scatter", action="store_true")
    i.set_defaults(fn=cmd_inspect)

    t = sub.add_parser("train-digits", help="train, export and document the demo digits model "
                       "(class-conditional) and its two classifiers")
    t.add_argument("--out", default="models/digits")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads for training and the reference likelihood (results are bitwise reproducible for a fixed thread count)")
    t.add_argument("--skip-train", action="store_true", help="reuse OUT/digits.pt, "
                   "OUT/digits_classifier.pt and OUT/eval_classifier.pt")
    t.add_argument("--skip-guidance", action="store_true", help="do not redo the guided-sampling "
                   "measurements (guidance_quality.json, samples_guided.png)")
    t.add_argument("--n-likelihood", type=int, default=16)
    t.set_defaults(fn=cmd_train_digits)

    args = p.parse_args(argv)
    from .checks import ContractError
    from .metadata import MetadataError
    from .tracing import ExportError
    from .verify import VerificationError

    try:
        args.fn(args)
    except (ContractError, MetadataError, ExportError, VerificationError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
